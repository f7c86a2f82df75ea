"""The 1-D conv encoder/decoder + codebook model behind the VQ and RVQ tokenizers.

Layer indices inside ``encoder`` / ``decoder`` follow the earlier tool's ``nn.Sequential`` layout, so
its state dicts load key for key. Tokenizing needs only the encoder and the codebooks; the decoder is
used by ``decode_to_signal`` and training.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

# One encoder layer: (in_channels, out_channels, kernel, stride).
# order "conv_bn_act": Conv → BN → SiLU (VQ, convs without bias, no activation after the last BN)
# order "conv_act_bn": Conv → SiLU → BN (RVQ, convs with bias, activation on every layer)
ARCHITECTURES: dict[str, dict] = {
    "vq_cnn0": {"encoder": [(1, 64, 5, 1), (64, 128, 5, 1), (128, 256, 25, 5)], "order": "conv_bn_act",
                "decoder": "vq_cnn0"},
    "vq_cnn1": {"encoder": [(1, 16, 5, 1), (16, 32, 5, 1), (32, 64, 25, 5)], "order": "conv_bn_act",
                "decoder": "vq_cnn1"},
    "vq_cnn2": {"encoder": [(1, 64, 5, 1), (64, 64, 5, 1), (64, 128, 9, 3), (128, 128, 9, 2), (128, 512, 5, 2)],
                "order": "conv_bn_act", "decoder": "vq_cnn2"},
    "rvq": {"encoder": [(1, 64, 5, 1), (64, 64, 5, 1), (64, 128, 9, 3), (128, 128, 9, 2), (128, 512, 5, 2)],
            "order": "conv_act_bn", "decoder": "rvq"},
}
#: Larger codebooks or more levels are damaged configs, refused before anything is allocated.
MAX_CODEBOOK_SIZE = 1 << 20
MAX_QUANTIZERS = 64
#: Upstream ``cnn_type`` → architecture name.
CNN_TYPES = {0: "vq_cnn0", 1: "vq_cnn1", 2: "vq_cnn2"}


@dataclass(frozen=True)
class NstConvVQConfig:
    """Architecture of a conv VQ/RVQ tokenizer model.

    Parameters
    ----------
    architecture : str
        One of :data:`ARCHITECTURES` (``vq_cnn0``, ``vq_cnn1``, ``vq_cnn2``, ``rvq``).
    codebook_size : int
        Codes per codebook (K).
    num_quantizers : int
        Codebooks (1 for VQ, n levels for RVQ).
    """

    architecture: str = "vq_cnn1"
    codebook_size: int = 8192
    num_quantizers: int = 1

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {self.architecture!r}")
        if not isinstance(self.codebook_size, int) or not 2 <= self.codebook_size <= MAX_CODEBOOK_SIZE:
            raise ValueError(f"codebook_size must be an integer between 2 and {MAX_CODEBOOK_SIZE:,}, "
                             f"got {self.codebook_size!r}")
        if not isinstance(self.num_quantizers, int) or not 1 <= self.num_quantizers <= MAX_QUANTIZERS:
            raise ValueError(f"num_quantizers must be an integer between 1 and {MAX_QUANTIZERS}, "
                             f"got {self.num_quantizers!r}")

    @property
    def layers(self) -> list[tuple[int, int, int, int]]:
        return [tuple(layer) for layer in ARCHITECTURES[self.architecture]["encoder"]]

    @property
    def dim(self) -> int:
        """Latent / codebook vector size D."""
        return self.layers[-1][1]

    @property
    def downsample_rate(self) -> int:
        """Samples per frame (total encoder stride d)."""
        return math.prod(layer[3] for layer in self.layers)

    @property
    def receptive_field(self) -> int:
        """Input samples that influence one output frame."""
        field, jump = 1, 1
        for _, _, kernel, stride in self.layers:
            field += (kernel - 1) * jump
            jump *= stride
        return field

    def to_dict(self) -> dict:
        return {"model_type": "nst_conv_vq", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> NstConvVQConfig:
        return cls(**{k: data[k] for k in ("architecture", "codebook_size", "num_quantizers") if k in data})

    def save(self, path: str | os.PathLike) -> None:
        from nst_hf.output import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> NstConvVQConfig:
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))


def _build_encoder(config: NstConvVQConfig) -> nn.Sequential:
    spec = ARCHITECTURES[config.architecture]
    modules: list[nn.Module] = []
    last = len(config.layers) - 1
    for index, (cin, cout, kernel, stride) in enumerate(config.layers):
        if spec["order"] == "conv_bn_act":
            modules += [nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm1d(cout)]
            if index != last:
                modules.append(nn.SiLU())
        else:
            modules += [nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=True), nn.SiLU(),
                        nn.BatchNorm1d(cout)]
    return nn.Sequential(*modules)


def _build_decoder(config: NstConvVQConfig) -> nn.Sequential:
    name = ARCHITECTURES[config.architecture]["decoder"]
    if name in ("vq_cnn0", "vq_cnn1"):
        dim, mid, low = {"vq_cnn0": (256, 128, 64), "vq_cnn1": (64, 32, 16)}[name]
        return nn.Sequential(
            nn.ConvTranspose1d(dim, mid, 25, stride=5, padding=12, bias=False), nn.BatchNorm1d(mid), nn.SiLU(),
            nn.Conv1d(mid, low, 5, padding=2, bias=False), nn.BatchNorm1d(low), nn.SiLU(),
            nn.Conv1d(low, 1, 5, padding=2, bias=True),
        )
    if name == "vq_cnn2":
        return nn.Sequential(
            nn.ConvTranspose1d(512, 128, 5, stride=2, padding=2, bias=False), nn.BatchNorm1d(128), nn.SiLU(),
            nn.ConvTranspose1d(128, 128, 9, stride=2, padding=4, bias=False), nn.BatchNorm1d(128), nn.SiLU(),
            nn.ConvTranspose1d(128, 64, 9, stride=3, padding=4, bias=False), nn.BatchNorm1d(64), nn.SiLU(),
            nn.Conv1d(64, 64, 5, padding=2, bias=False), nn.BatchNorm1d(64), nn.SiLU(),
            nn.Conv1d(64, 1, 5, padding=2, bias=True),
        )
    return nn.Sequential(  # rvq
        nn.ConvTranspose1d(512, 256, 8, stride=2, padding=3), nn.SiLU(), nn.BatchNorm1d(256),
        nn.ConvTranspose1d(256, 128, 12, stride=2, padding=5), nn.SiLU(), nn.BatchNorm1d(128),
        nn.ConvTranspose1d(128, 64, 18, stride=3, padding=8), nn.SiLU(), nn.BatchNorm1d(64),
        nn.Conv1d(64, 1, 1),
    )


class NstConvVQModel(nn.Module):
    """Conv encoder, ``num_quantizers`` codebooks and a decoder, built from :class:`NstConvVQConfig`.

    ``codebooks`` is a buffer of shape ``[num_quantizers, codebook_size, dim]``.
    """

    @staticmethod
    def state_shapes(config: NstConvVQConfig) -> dict[str, torch.Size]:
        """The shape of every tensor of the model's state, computed without allocating it."""
        with torch.device("meta"):
            model = NstConvVQModel(config)
        return {name: tensor.shape for name, tensor in model.state_dict().items()}

    def __init__(self, config: NstConvVQConfig):
        super().__init__()
        self.config = config
        self.encoder = _build_encoder(config)
        self.decoder = _build_decoder(config)
        self.register_buffer("codebooks", torch.zeros(config.num_quantizers, config.codebook_size, config.dim))

    def encode_latent(self, signal: torch.Tensor) -> torch.Tensor:
        """``[B, 1, L]`` normalised signal → ``[B, D, ceil(L / d)]`` continuous latent.

        Without gradients this runs the same layers with SiLU in place (one memory pass less per layer;
        bit-identical).
        """
        if self.training or torch.is_grad_enabled():
            return self.encoder(signal)
        hidden = signal
        for layer in self.encoder:
            hidden = nn.functional.silu(hidden, inplace=True) if isinstance(layer, nn.SiLU) else layer(hidden)
        return hidden

    def encode_frames(self, signal: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """``[B, 1, L]`` normalised signal → ``[B, ceil(L / d), D]`` latent rows, for inference.

        ``fast=True`` runs :class:`~nst_hf.models.fast_encoder.FastEncoder` (BatchNorm folded, the layer forms
        measured fastest for the architecture; rebuilt from the encoder's weights whenever they change), unless
        ``NST_HF_PLAIN_ENCODER=1``; ``fast=False``, or the model in training mode or with gradients on, runs
        :meth:`encode_latent`, the reference. The two differ by fp32 rounding only.
        """
        from nst_hf.models.fast_encoder import plain_encoder_requested

        if not fast or self.training or torch.is_grad_enabled() or plain_encoder_requested():
            return self.encode_latent(signal).transpose(1, 2)
        return self.fast_encoder()(signal)

    def fast_encoder(self):
        """The :class:`~nst_hf.models.fast_encoder.FastEncoder` of the current encoder weights (cached; rebuilt
        after loading, training, an in-place edit or a move to another device or dtype)."""
        from nst_hf.models.fast_encoder import LAYER_FORMS, FastEncoder

        tensors = list(self.encoder.parameters()) + list(self.encoder.buffers())
        key = tuple((t.device, t.dtype, t.data_ptr(), t._version) for t in tensors)
        cached = self.__dict__.get("_fast_encoder")
        if cached is None or cached[0] != key:
            order = ARCHITECTURES[self.config.architecture]["order"]
            on_cpu = tensors[0].device.type == "cpu"  # GPUs: plain forms, whose fp32 is kept by cuDNN's switch
            forms = LAYER_FORMS.get(self.config.architecture) if on_cpu else None
            cached = (key, FastEncoder.from_encoder(self.encoder, order, forms))
            self.__dict__["_fast_encoder"] = cached
        return cached[1]

    def quantize(self, latent: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """``[N, D]`` latent vectors → ``[N, levels]`` codes (nearest codebook vector, residual per level)."""
        levels = num_levels or self.config.num_quantizers
        searches = self.code_searches()
        residual = latent
        codes = []
        for level in range(levels):
            codebook = self.codebooks[level]
            index = searches[level](residual)
            codes.append(index)
            if level + 1 < levels:
                residual = residual - codebook[index]
        return torch.stack(codes, dim=1)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_code_searches", None)  # rebuilt where it is used; keeps pickles (and their hashes) stable
        state.pop("_fast_encoder", None)
        return state

    def code_searches(self) -> list:
        """One :class:`~nst_hf.quantizers.nearest.NearestCodeSearch` per level, rebuilt whenever the
        codebooks change (loading, training, an in-place edit, a move to another device)."""
        from nst_hf.quantizers.nearest import NearestCodeSearch

        codebooks = self.codebooks
        key = (codebooks.device, codebooks.data_ptr(), codebooks._version)
        cached = self.__dict__.get("_code_searches")
        if cached is None or cached[0] != key:
            cached = (key, [NearestCodeSearch(codebook) for codebook in codebooks.detach()])
            self.__dict__["_code_searches"] = cached
        return cached[1]

    def codes_to_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """``[N, levels]`` codes → ``[N, D]`` sum of the chosen codebook vectors."""
        latent = torch.zeros(codes.shape[0], self.config.dim, dtype=self.codebooks.dtype, device=self.codebooks.device)
        for level in range(codes.shape[1]):
            latent = latent + self.codebooks[level][codes[:, level]]
        return latent

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``[T, levels]`` codes of one read → ``[T * d]`` normalised signal through the decoder."""
        latent = self.codes_to_latent(codes).T.unsqueeze(0)
        signal = self.decoder(latent)[0, 0]
        target = codes.shape[0] * self.config.downsample_rate
        if signal.shape[0] >= target:
            return signal[:target]
        return torch.nn.functional.pad(signal, (0, target - signal.shape[0]))
