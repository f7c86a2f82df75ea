"""nst_hf: nanopore raw-signal tokenizers for language models, as Hugging Face tokenizers."""

from __future__ import annotations

from nst_hf._version import __version__

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
from nst_hf.lm import extend_lm_tokenizer
from nst_hf import auto
from nst_hf.auto import load_tokenizer
from nst_hf.hf_datasets import reads_to_dataset, tokenize_batch

_register_auto_classes()

__all__ = ["__version__", "SignalRecord", "SkippedRead", "open_reads", "PreprocessingConfig", "preprocess",
           "NstVQTokenizer", "NstRVQTokenizer", "NstKMeansTokenizer", "VQTokenizer", "RVQTokenizer",
           "KmeansTokenizer", "TokenizeSummary", "extend_lm_tokenizer", "load_tokenizer", "reads_to_dataset",
           "tokenize_batch"]
