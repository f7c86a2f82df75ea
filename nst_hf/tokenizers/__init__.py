"""The three tokenizer classes (and the earlier tool's names for them)."""

from nst_hf.tokenizers.base import NstBaseTokenizer, TokenizeSummary
from nst_hf.tokenizers.kmeans import NstKMeansTokenizer
from nst_hf.tokenizers.neural import NstRVQTokenizer, NstVQTokenizer

VQTokenizer = NstVQTokenizer
RVQTokenizer = NstRVQTokenizer
KmeansTokenizer = NstKMeansTokenizer

__all__ = ["NstBaseTokenizer", "NstVQTokenizer", "NstRVQTokenizer", "NstKMeansTokenizer", "TokenizeSummary",
           "VQTokenizer", "RVQTokenizer", "KmeansTokenizer"]
