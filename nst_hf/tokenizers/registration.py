"""AutoTokenizer registration of the three tokenizer classes, so that ``AutoTokenizer.from_pretrained``
finds them by the ``tokenizer_class`` a saved folder names."""

from __future__ import annotations

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig


class NstBwavConfig(PretrainedConfig):
    """Marker config so ``AutoTokenizer`` can map ``model_type: nst_bwav`` to the nst_hf classes."""

    model_type = "nst_bwav"


def register_auto_classes() -> None:
    """Register the three tokenizer classes with ``AutoConfig``/``AutoTokenizer`` (idempotent)."""
    from nst_hf.tokenizers.kmeans import NstKMeansTokenizer
    from nst_hf.tokenizers.neural import NstRVQTokenizer, NstVQTokenizer

    try:
        AutoConfig.register("nst_bwav", NstBwavConfig)
    except ValueError:
        pass  # already registered
    # One config class keys all three: TOKENIZER_MAPPING ends up pointing at the last class, and that is
    # fine, because a saved folder's "tokenizer_class" is resolved by class name (transformers keeps every
    # registered class in its by-name registry), not through the config mapping.
    for cls in (NstVQTokenizer, NstRVQTokenizer, NstKMeansTokenizer):
        AutoTokenizer.register(NstBwavConfig, slow_tokenizer_class=cls, exist_ok=True)
