"""The three tokenizer classes; importing this package registers them with ``transformers.AutoTokenizer``."""

from nst_hf.tokenizers.base import NstBaseTokenizer
from nst_hf.tokenizers.kmeans import NstKMeansTokenizer
from nst_hf.tokenizers.neural import NstRVQTokenizer, NstVQTokenizer
from nst_hf.tokenizers.compat import KmeansTokenizer, RVQTokenizer, VQTokenizer
from nst_hf.tokenizers.registration import register_auto_classes

register_auto_classes()

__all__ = ["NstBaseTokenizer", "NstVQTokenizer", "NstRVQTokenizer", "NstKMeansTokenizer", "VQTokenizer",
           "RVQTokenizer", "KmeansTokenizer"]
