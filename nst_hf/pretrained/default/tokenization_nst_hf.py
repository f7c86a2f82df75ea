"""Lets `AutoTokenizer.from_pretrained(repo, trust_remote_code=True)` load this repo without importing
nst_hf first. The classes live in the installed package: `pip install nst-hf`."""
from nst_hf import NstKMeansTokenizer as _NstKMeansTokenizer
from nst_hf import NstRVQTokenizer as _NstRVQTokenizer
from nst_hf import NstVQTokenizer as _NstVQTokenizer


class NstVQTokenizer(_NstVQTokenizer):
    pass


class NstRVQTokenizer(_NstRVQTokenizer):
    pass


class NstKMeansTokenizer(_NstKMeansTokenizer):
    pass
