"""nst_hf: nanopore raw-signal tokenizers for language models, as Hugging Face tokenizers.

The names below are resolved on first use, so ``import nst_hf.io`` or ``nst-hf -h`` never import torch or
transformers. ``import nst_hf`` makes ``transformers.AutoTokenizer`` find the three tokenizer classes:
they are registered as soon as transformers' auto classes load (:mod:`nst_hf._autoregister`).
"""

from __future__ import annotations

from importlib import import_module

from nst_hf._autoregister import register_with_transformers
from nst_hf._version import __version__

#: Public name → module that defines it.
_EXPORTS = {
    "SignalRecord": "nst_hf.io", "SkippedRead": "nst_hf.io", "open_reads": "nst_hf.io",
    "PreprocessingConfig": "nst_hf.preprocessing", "preprocess": "nst_hf.preprocessing",
    "NstVQTokenizer": "nst_hf.tokenizers", "NstRVQTokenizer": "nst_hf.tokenizers",
    "NstKMeansTokenizer": "nst_hf.tokenizers",
    "VQTokenizer": "nst_hf.tokenizers.compat", "RVQTokenizer": "nst_hf.tokenizers.compat",
    "KmeansTokenizer": "nst_hf.tokenizers.compat",
    "TokenizeSummary": "nst_hf.pipeline", "tokenize_file": "nst_hf.pipeline", "tokenize_inputs": "nst_hf.pipeline",
    "pair_inputs": "nst_hf.pipeline", "open_basecalls": "nst_hf.io.basecalls", "Basecall": "nst_hf.io.basecalls",
    "pair_batch": "nst_hf.hf_datasets",
    "extend_lm_tokenizer": "nst_hf.lm", "load_tokenizer": "nst_hf.auto",
    "reads_to_dataset": "nst_hf.hf_datasets", "tokenize_batch": "nst_hf.hf_datasets",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nst_hf' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


register_with_transformers()
