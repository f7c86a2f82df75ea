"""Neural models built from configs (encoders, decoders, codebooks)."""

from nst_hf.models.conv_vq import ARCHITECTURES, NstConvVQConfig, NstConvVQModel

__all__ = ["ARCHITECTURES", "NstConvVQConfig", "NstConvVQModel"]
