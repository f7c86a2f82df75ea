"""Tokenize whole runs: many files → one output (JSON lines, Parquet or a saved ``datasets`` folder).

Each input file becomes one *part* in ``<output>.parts/``, written atomically when the file is done
and recorded in a manifest with the input's size and modification time and the tokenizer's
fingerprint. The final output is assembled from the parts in input order and renamed into place;
``resume=True`` reuses every finished part, so an interrupted run continues without duplicating or
losing a read, and never mixes the tokens of two tokenizers.

What a run will not do: write over or inside its inputs, replace anything that is not an earlier
nst_hf output, replace an earlier output without ``overwrite=True`` (and then only once the new one is
complete), or share its output with a second run (an advisory lock refuses the second at once).

:func:`pair_inputs` runs the same way, pairing each read's tokens with its basecall (:mod:`nst_hf.pairs`).
"""

from nst_hf.output import printable_path
from nst_hf.pipeline.files import TokenizeSummary, tokenize_file, write_tokens
from nst_hf.pipeline.guard import OUTPUT_MARKER, OutputLock, check_output_location
from nst_hf.pipeline.run import FORMATS, PairsSummary, PipelineSummary, pair_inputs, tokenize_inputs

__all__ = ["FORMATS", "OUTPUT_MARKER", "OutputLock", "PairsSummary", "PipelineSummary", "TokenizeSummary",
           "check_output_location", "pair_inputs", "printable_path", "tokenize_file", "tokenize_inputs", "write_tokens"]
