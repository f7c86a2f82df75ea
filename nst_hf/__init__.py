"""nst_hf: nanopore raw-signal tokenizers for language models, as Hugging Face tokenizers."""

from __future__ import annotations

__version__ = "0.1.0"

from nst_hf.io import SignalRecord, SkippedRead, open_reads
from nst_hf.preprocessing import PreprocessingConfig, preprocess
from nst_hf.tokenizers import (
    KmeansTokenizer,
    NstKMeansTokenizer,
    NstRVQTokenizer,
    NstVQTokenizer,
    RVQTokenizer,
    TokenizeSummary,
    VQTokenizer,
)
from nst_hf.hub import register_auto_classes as _register_auto_classes

_register_auto_classes()

__all__ = ["__version__", "SignalRecord", "SkippedRead", "open_reads", "PreprocessingConfig", "preprocess",
           "NstVQTokenizer", "NstRVQTokenizer", "NstKMeansTokenizer", "VQTokenizer", "RVQTokenizer",
           "KmeansTokenizer", "TokenizeSummary"]
