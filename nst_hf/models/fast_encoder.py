"""An inference-only form of the conv encoder, built from its weights: BatchNorm folded away, channels-last.

The plain ``nn.Sequential`` (``NstConvVQModel.encoder``) stays the reference and the form that trains and
saves; this one is rebuilt from its tensors whenever they change and never writes to them.

- VQ (Conv → BN → SiLU): each BN is folded into the convolution before it (weights scaled per output
  channel, the BN shift becomes the bias).
- RVQ (Conv → SiLU → BN): a BN after SiLU is folded into the *next* convolution (its weights scaled per
  input channel, ``W·shift`` added to its bias). Near the ends of a window some of that convolution's taps
  read its zero padding, where the unfolded layer saw zeros rather than ``shift``; those few output
  columns get the exact correction. The last BN is applied to the latent (one pass over ``D / d`` values
  per sample).
- Each layer runs in one of four forms (:data:`LAYER_FORMS`, measured per architecture): ``"plain"``
  (torch's ``conv1d`` on ``[B, C, L]``), ``"channels_last"`` (a 2-D convolution on ``[B, C, 1, L]`` in
  channels-last memory, which oneDNN runs with its direct channels-last kernels: about 1.6× the plain
  ``conv1d`` for the default tokenizer's 16/32-channel layers on one AVX-512 core), ``"gemm"``
  (block products over the channels-last activations: :func:`_register_tiled_conv`, our C kernel, on
  AVX-512 CPUs, else :func:`_shifted_gemm`'s BLAS calls) or ``"im2col"``
  (:func:`_im2col_gemm`: one BLAS product over the unfolded windows, for a first layer). SiLU runs in place on
  each layer's output. The latent comes out as ``[B, T, D]`` rows, the layout the nearest-code search
  takes. On GPUs every layer uses the plain form (BatchNorm folded all the same).

The folded weights are computed in float64 and rounded once, so the fast form's latents differ from the
plain layers' only by fp32 rounding (the tests bound it against a float64 evaluation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from nst_hf._threads import run_in_ranges

try:  # the compiled kernel of the "gemm" form (optional: without a C compiler, torch's BLAS products)
    from nst_hf.models import _conv_rows

    _CONV_ROWS_AVAILABLE = bool(_conv_rows.available())
except ImportError:  # pragma: no cover - builds without the extension
    _conv_rows, _CONV_ROWS_AVAILABLE = None, False

#: Set to ``1`` to run every VQ/RVQ tokenizer through the plain ``nn.Sequential`` encoder (the reference).
PLAIN_ENCODER_ENV = "NST_HF_PLAIN_ENCODER"


def plain_encoder_requested() -> bool:
    """True when ``NST_HF_PLAIN_ENCODER=1`` asks for the reference encoder."""
    return os.environ.get(PLAIN_ENCODER_ENV, "").strip() not in ("", "0")


LAYER_FORMS_KNOWN = ("plain", "channels_last", "gemm", "im2col")
#: Each architecture's fastest layer forms on CPU, as measured with torch 2.13 on one core.
#: ``vq_cnn1`` (the default tokenizer; AMD EPYC, AVX-512): its 16/32-channel layers run ~1.6× faster
#: channels-last, and its last layer (32→64, k25, s5) as shifted BLAS products (channels-last would be
#: faster still but flips a token or two per 10⁵ frames against float64). The wider architectures (Intel
#: Xeon, AVX-512, 2026-12-03; 4 windows of 12,000 samples): their first layer (1 input channel) as one
#: im2col product, 12.7 → 3.4 ms for the RVQ encoder's 1→64, k5, and the rest channels-last, 1.3-2.4× the
#: plain layers for 64-128 channels; whole encoders ``rvq`` 168 → 105 ms, ``vq_cnn0`` 295 → 219 ms,
#: ``vq_cnn2`` 122 → 107 ms (its first layer is faster channels-last). With oneDNN held to AVX2 the RVQ
#: encoder gains too (617 → 779 k samples/s, two threads); on AMD CPUs these forms are not yet measured.
LAYER_FORMS: dict[str, tuple[str, ...]] = {
    "vq_cnn1": ("channels_last", "channels_last", "gemm"),
    "vq_cnn0": ("im2col", "channels_last", "channels_last"),
    "vq_cnn2": ("channels_last",) * 5,
    "rvq": ("im2col",) + ("channels_last",) * 4,
}


@dataclass(frozen=True)
class _Layer:
    """One folded convolution: weight ``[Co, Ci, k]`` (``[Co, Ci, 1, k]`` channels-last for that form), bias
    ``[Co]``, optional SiLU, and for a layer that absorbed the previous BN the per-tap ``W·shift`` sums that
    its padded taps lack."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    padding: int
    silu: bool
    tap_shift: torch.Tensor | None = None  # [k, Co] float64: W[:, :, j] · shift of the BN folded in, per tap j
    #: ``"channels_last"`` (oneDNN conv2d on channels-last memory), ``"plain"`` (conv1d, ``[B, C, L]``),
    #: ``"gemm"`` (:func:`_register_tiled_conv` or :func:`_shifted_gemm`) or ``"im2col"`` (:func:`_im2col_gemm`).
    form: str = "plain"
    #: For the ``"gemm"`` form: ``[k / stride, stride·Ci, Co]`` (taps zero-padded to a multiple of the stride).
    gemm_weight: torch.Tensor | None = None


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``scale * x + shift`` (float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def _layer(weight64: torch.Tensor, bias64: torch.Tensor, conv: nn.Conv1d, silu: bool, form: str,
           tap_shift: torch.Tensor | None = None) -> _Layer:
    if form not in LAYER_FORMS_KNOWN:
        raise ValueError(f"unknown layer form {form!r}: expected one of {LAYER_FORMS_KNOWN}")
    weight = weight64.to(conv.weight.dtype)
    gemm = _gemm_weight(weight, conv.stride[0]) if form == "gemm" else None
    if form == "im2col":  # [k·Ci, Co], row j·Ci + i multiplies tap j of input channel i
        gemm = weight.permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous()
    weight = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last) if form == "channels_last" else weight
    return _Layer(weight, bias64.to(conv.weight.dtype), conv.stride[0], conv.padding[0], silu, tap_shift, form, gemm)


def _gemm_weight(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``[Co, Ci, k]`` → ``[ceil(k / s), s·Ci, Co]``: block ``j`` multiplies input samples ``s·(t + j) … + s − 1``
    of output frame ``t``, laid out as ``s`` consecutive channels-last rows (zero taps pad ``k`` up)."""
    out_channels, in_channels, kernel = weight.shape
    blocks = -(-kernel // stride)
    padded = F.pad(weight, (0, blocks * stride - kernel))
    return padded.reshape(out_channels, in_channels, blocks, stride).permute(2, 3, 1, 0) \
                 .reshape(blocks, stride * in_channels, out_channels).contiguous()


def _split(encoder: nn.Sequential) -> list[list[nn.Module]]:
    """The encoder's modules grouped per convolution: ``[conv, (bn | silu)...]``."""
    groups: list[list[nn.Module]] = []
    for module in encoder:
        if isinstance(module, nn.Conv1d):
            groups.append([module])
        elif not groups or not isinstance(module, (nn.BatchNorm1d, nn.SiLU)):
            raise ValueError(f"cannot fold encoder module {module!r}: expected Conv1d, BatchNorm1d and SiLU only")
        else:
            groups[-1].append(module)
    return groups


def _fold_vq(groups: list[list[nn.Module]], forms: tuple[str, ...]) -> tuple[list[_Layer], None]:
    layers = []
    for group, form in zip(groups, forms):
        conv, bn, *rest = group
        if not isinstance(bn, nn.BatchNorm1d) or conv.bias is not None:
            raise ValueError("a VQ encoder layer must be Conv1d(bias=False) → BatchNorm1d [→ SiLU]")
        scale, shift = _bn_affine(bn)
        layers.append(_layer(conv.weight.double() * scale[:, None, None], shift, conv, bool(rest), form))
    return layers, None


def _fold_rvq(groups: list[list[nn.Module]], forms: tuple[str, ...]) -> tuple[list[_Layer], tuple[torch.Tensor, torch.Tensor]]:
    layers, previous = [], None  # previous: the (scale, shift) of the BN before this layer's convolution
    for group, form in zip(groups, forms):
        conv, silu, bn = group
        if not isinstance(silu, nn.SiLU) or not isinstance(bn, nn.BatchNorm1d) or conv.bias is None:
            raise ValueError("an RVQ encoder layer must be Conv1d(bias=True) → SiLU → BatchNorm1d")
        weight, bias, tap_shift = conv.weight.double(), conv.bias.double(), None
        if previous is not None:
            scale, shift = previous
            tap_shift = torch.einsum("oik,i->ko", weight, shift)  # [k, Co]
            bias = bias + tap_shift.sum(0)
            weight = weight * scale[None, :, None]
        layers.append(_layer(weight, bias, conv, True, form, tap_shift))
        previous = _bn_affine(bn)
    dtype = groups[-1][0].weight.dtype
    return layers, (previous[0].to(dtype), previous[1].to(dtype))


def _edge_corrections(layer: _Layer, length_in: int, length_out: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Output columns whose taps read the zero padding, and ``[Co, columns]`` to subtract there: the folded
    bias holds ``W·shift`` for every tap, but the unfolded layer padded with zeros *after* its BN."""
    kernel = layer.tap_shift.shape[0]
    left = range(min(length_out, -(-layer.padding // layer.stride)))
    right = range(max(0, -(-(length_in + layer.padding - kernel + 1) // layer.stride)), length_out)
    taps = torch.arange(kernel)
    columns, fixes = [], []
    for column in sorted(set(left) | set(right)):
        position = column * layer.stride - layer.padding + taps
        missing = (position < 0) | (position >= length_in)
        if bool(missing.any()):
            columns.append(column)
            fixes.append(layer.tap_shift[missing.to(layer.tap_shift.device)].sum(0))
    if not columns:
        return None
    index = torch.tensor(columns, device=layer.weight.device)
    return index, torch.stack(fixes, 1).to(layer.weight.dtype)


class FastEncoder:
    """The encoder of an ``NstConvVQModel`` for inference: ``[B, 1, L]`` → ``[B, T, D]`` latent rows.

    Build it with :meth:`from_encoder`; it holds folded copies of the weights on the encoder's device and
    dtype. Gradients are never needed (call it under ``torch.inference_mode``/``no_grad``).
    """

    def __init__(self, layers: list[_Layer], final_affine: tuple[torch.Tensor, torch.Tensor] | None):
        self.layers = layers
        self.final_affine = final_affine
        self._fixes: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor] | None] = {}

    @classmethod
    def from_encoder(cls, encoder: nn.Sequential, order: str, forms: tuple[str, ...] | None = None) -> FastEncoder:
        """Fold ``encoder`` (order ``"conv_bn_act"`` for VQ, ``"conv_act_bn"`` for RVQ) into a fast form.

        ``forms`` names each layer's form (see :data:`LAYER_FORMS`); default ``"plain"`` for every layer.
        """
        with torch.no_grad():
            groups = _split(encoder)
            forms = tuple(forms or ("plain",) * len(groups))
            if len(forms) != len(groups):
                raise ValueError(f"forms names {len(forms)} layers but the encoder has {len(groups)}")
            if order == "conv_bn_act":
                return cls(*_fold_vq(groups, forms))
            if order == "conv_act_bn":
                return cls(*_fold_rvq(groups, forms))
        raise ValueError(f"unknown encoder order {order!r}: expected 'conv_bn_act' or 'conv_act_bn'")

    def __call__(self, signal: torch.Tensor) -> torch.Tensor:
        """``[B, 1, L]`` signal → ``[B, T, D]`` latent (a view whose frames are contiguous rows of ``D``)."""
        rows = signal.transpose(1, 2)  # [B, L, C] views throughout
        for number, layer in enumerate(self.layers):
            length_in = rows.shape[1]
            if layer.form == "channels_last":
                hidden = F.conv2d(_channels_last_view(rows), layer.weight, layer.bias, (1, layer.stride),
                                  (0, layer.padding))
                rows = hidden[:, :, 0, :].permute(0, 2, 1)
            elif layer.form == "plain":
                hidden = F.conv1d(rows.transpose(1, 2), layer.weight, layer.bias, layer.stride, layer.padding)
                rows = hidden.transpose(1, 2)
            elif layer.form == "im2col":
                rows = _im2col_gemm(rows, layer)
            elif _conv_rows_usable(rows, layer):
                rows = _register_tiled_conv(rows, layer)
            else:
                rows = _shifted_gemm(rows, layer)
            if layer.tap_shift is not None:
                self._correct_edges(number, layer, rows, length_in)
            if layer.silu:
                F.silu(rows, inplace=True)
        if self.final_affine is not None:
            scale, shift = self.final_affine
            rows.mul_(scale).add_(shift)
        return rows

    def _correct_edges(self, number: int, layer: _Layer, rows: torch.Tensor, length_in: int) -> None:
        key = (number, length_in)
        if key not in self._fixes:
            self._fixes[key] = _edge_corrections(layer, length_in, rows.shape[1])
        fix = self._fixes[key]
        if fix is not None:
            columns, values = fix
            rows[:, columns] -= values.T


def _channels_last_view(rows: torch.Tensor) -> torch.Tensor:
    """``[B, L, C]`` rows as the ``[B, C, 1, L]`` channels-last input of a 2-D convolution, a view when the
    rows are contiguous. The strides are set explicitly: with one channel the tensor is contiguous in both
    layouts and torch picked the plain one, so the first layer ran oneDNN's plain kernel (10× slower for
    the default tokenizer's 1→16, k5) and its output needed a copy into channels-last for the next layer."""
    rows = rows.contiguous()
    batch, length, channels = rows.shape
    return rows.as_strided((batch, channels, 1, length), (length * channels, 1, length * channels, channels))


def _conv_rows_usable(rows: torch.Tensor, layer: _Layer) -> bool:
    """Whether the compiled register-tiled kernel (:mod:`nst_hf.models._conv_rows`, AVX-512F) runs this layer."""
    return (_CONV_ROWS_AVAILABLE and rows.device.type == "cpu"
            and rows.dtype == torch.float32 and layer.gemm_weight.shape[2] % _conv_rows.CHANNEL_BLOCK == 0)


def _register_tiled_conv(rows: torch.Tensor, layer: _Layer) -> torch.Tensor:
    """The ``"gemm"`` form in the compiled kernel: the same block products and order of sums as
    :func:`_shifted_gemm` (bit-identical on the shared reads), read straight from the input rows (no padded
    copy) and tiled in registers, 6 rows × 64 channels: 112 → 129 GFLOP/s for the default tokenizer's
    32→64, k25, s5 layer on one Intel Xeon core (AVX-512). Rows are split over torch's threads."""
    rows = rows.contiguous()
    batch, length, in_channels = rows.shape
    blocks, _, out_channels = layer.gemm_weight.shape
    frames = (length + 2 * layer.padding - layer.weight.shape[-1]) // layer.stride + 1
    out = rows.new_empty(batch, frames, out_channels)
    arrays = rows.numpy(), layer.gemm_weight.numpy(), layer.bias.numpy(), out.numpy()

    def run(start: int, stop: int) -> None:
        _conv_rows.conv_rows(*arrays, batch, length, in_channels, layer.stride, layer.padding, blocks, frames,
                             out_channels, start, stop)

    total = batch * frames
    run_in_ranges("encoder", run, total, min(torch.get_num_threads(), total // 256 or 1), granule=6)
    return out


def _shifted_gemm(rows: torch.Tensor, layer: _Layer) -> torch.Tensor:
    """A strided convolution as ``k / s`` matrix products over the channels-last input, no im2col copy.

    The input ``[B, L, Ci]`` is copied once into a zero-padded buffer whose rows are ``s`` samples
    (``s·Ci`` values); output frame ``t`` is ``Σ_j buffer[t + j] @ W_j``, and the windows of the batch lie
    end to end so each product covers the whole batch (the few rows that straddle two windows are
    dropped). oneDNN's channels-last kernel for these layers rounds several times worse than torch's
    plain convolution (it would cost a flipped token or two per 10⁵ frames against float64); these
    BLAS products, summed ``k / s`` times, round like the plain layers.
    """
    batch, length, in_channels = rows.shape
    blocks, width, out_channels = layer.gemm_weight.shape
    stride, pad = layer.stride, layer.padding
    frames = (length + 2 * pad - layer.weight.shape[-1]) // stride + 1
    per_window = max(-(-(length + pad) // stride), frames + blocks - 1)  # buffer rows per window
    buffer = rows.new_empty(batch * per_window + blocks - 1, width)
    samples = buffer[:batch * per_window].view(batch, per_window * stride, in_channels)
    samples[:, :pad].zero_()
    samples[:, pad + length:].zero_()
    buffer[batch * per_window:].zero_()
    samples[:, pad:pad + length] = rows
    count = batch * per_window
    out = torch.addmm(layer.bias, buffer[:count], layer.gemm_weight[0])
    for j in range(1, blocks):
        out.addmm_(buffer[j:j + count], layer.gemm_weight[j])
    return out.view(batch, per_window, out_channels)[:, :frames]


def _im2col_gemm(rows: torch.Tensor, layer: _Layer) -> torch.Tensor:
    """A convolution as one matrix product over its unfolded windows ``[B·T, k·Ci]`` (an im2col copy).

    For a layer with few input values per window (the first layer, ``Ci = 1``: ``k`` values) the copy is
    small and one product replaces a convolution that torch runs far below its rate: 1→64 channels, k5,
    takes ~3.4 ms instead of 12.7 ms for 48,000 samples on one Intel Xeon (AVX-512) core.
    """
    batch, _, in_channels = rows.shape
    kernel = layer.weight.shape[-1]
    padded = F.pad(rows, (0, 0, layer.padding, layer.padding))
    windows = padded.unfold(1, kernel, layer.stride)  # [B, T, Ci, k]
    frames = windows.shape[1]
    columns = windows.transpose(2, 3).reshape(batch * frames, kernel * in_channels)
    return torch.addmm(layer.bias, columns, layer.gemm_weight).view(batch, frames, -1)
