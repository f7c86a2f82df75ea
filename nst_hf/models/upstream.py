"""The converters for the earlier ``nanopore_signal_tokenizer`` tool's files, read without code execution:
VQ/RVQ checkpoints (:func:`load_upstream_model`) and K-Means centroids (:func:`load_upstream_centroids`).

VQ files are ``torch.save`` dicts with ``model_state_dict`` and ``cnn_type``; RVQ files are bare state
dicts whose encoder keys are ``encoder.<i>.*`` or ``encoder.net.<i>.*``. Everything is read with
``torch.load(weights_only=True)``; only NumPy's array reconstruction is allow-listed, because real
VQ training checkpoints carry a NumPy RNG state.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from nst_hf.errors import CheckpointError
from nst_hf.models.conv_vq import CNN_TYPES, NstConvVQConfig, NstConvVQModel

logger = logging.getLogger(__name__)

_VQ_EMBED = "vq._codebook.embed"
_RVQ_EMBED = re.compile(r"^rvq\.layers\.(\d+)\._codebook\.embed$")


def _numpy_safe_globals() -> list:
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def safe_torch_load(path: str | Path):
    """``torch.load(weights_only=True)`` with only NumPy array reconstruction allow-listed."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot be loaded safely as a checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "nst_hf never unpickles arbitrary objects; re-save the state dict with torch.save(model.state_dict())."
        ) from exc


def _check_initted(state: dict, prefix: str, path) -> None:
    flag = state.get(f"{prefix}._codebook.initted")
    if flag is not None and not bool(torch.as_tensor(flag).item()):
        raise CheckpointError(f"{path}: codebook {prefix} was never initialised (initted=False); "
                              "its vectors are random, so it cannot tokenize")


def convert_upstream_state(state: dict, cnn_type: int | None, path="<state dict>") -> tuple[NstConvVQConfig, dict]:
    """Map an upstream VQ or RVQ state dict to ``(config, NstConvVQModel state dict)``."""
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if _VQ_EMBED in state:
        if cnn_type is None:
            cnn_type = 0
        if cnn_type not in CNN_TYPES:
            raise CheckpointError(f"{path}: unknown cnn_type {cnn_type}; supported: {sorted(CNN_TYPES)}")
        _check_initted(state, "vq", path)
        embed = state[_VQ_EMBED]
        config = NstConvVQConfig(architecture=CNN_TYPES[cnn_type], codebook_size=int(embed.shape[-2]), num_quantizers=1)
        codebooks = embed.reshape(1, embed.shape[-2], embed.shape[-1])
    else:
        levels = sorted(int(m.group(1)) for k in state if (m := _RVQ_EMBED.match(k)))
        if not levels:
            raise CheckpointError(f"{path}: neither a VQ ('{_VQ_EMBED}') nor an RVQ ('rvq.layers.<q>._codebook.embed') "
                                  "checkpoint of the earlier nanopore_signal_tokenizer")
        if levels != list(range(len(levels))):
            raise CheckpointError(f"{path}: RVQ levels {levels} are not 0..n-1")
        for level in levels:
            _check_initted(state, f"rvq.layers.{level}", path)
        embeds = [state[f"rvq.layers.{q}._codebook.embed"] for q in levels]
        config = NstConvVQConfig(architecture="rvq", codebook_size=int(embeds[0].shape[-2]), num_quantizers=len(levels))
        codebooks = torch.stack([e.reshape(e.shape[-2], e.shape[-1]) for e in embeds])
    model_state = {}
    for key, value in state.items():
        if key.startswith("encoder.net."):
            model_state["encoder." + key[len("encoder.net."):]] = value
        elif key.startswith(("encoder.", "decoder.")):
            model_state[key] = value
    model_state["codebooks"] = codebooks.float()
    if codebooks.shape[-1] != config.dim:
        raise CheckpointError(f"{path}: codebook vectors have {codebooks.shape[-1]} dimensions, but architecture "
                              f"{config.architecture} produces {config.dim}; wrong cnn_type?")
    return config, model_state


def load_upstream_model(path: str | Path) -> NstConvVQModel:
    """Load an upstream ``.pth``/``.pt`` VQ or RVQ checkpoint into an :class:`NstConvVQModel` (eval mode)."""
    data = safe_torch_load(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a state dict or a checkpoint dict, got {type(data).__name__}")
    if "model_state_dict" in data:
        state, cnn_type = data["model_state_dict"], data.get("cnn_type")
        if cnn_type is None:
            logger.warning("%s has no cnn_type; assuming 0 as the earlier tool did", path)
    else:
        state, cnn_type = data, None
    config, model_state = convert_upstream_state(state, None if cnn_type is None else int(cnn_type), path)
    model = NstConvVQModel(config)
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit architecture {config.architecture}: "
                              f"{' '.join(str(exc).split())}") from exc
    return model.eval()


def load_upstream_centroids(path: str | os.PathLike, dimension: int | None = None, stride: int | None = None,
                            trust_pickle: bool = False) -> tuple[np.ndarray, int, int]:
    """Read upstream centroids: ``.npy`` array (stride must be given), pickled-dict ``.npy``, or ``.npz``.

    A pickled dict can execute code when loaded, so it is read only with ``trust_pickle=True``.
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            centroids = data["centroids"]
            dimension = int(data["dim"]) if "dim" in data else dimension
            stride = int(data["stride"]) if "stride" in data else stride
    else:
        try:
            centroids = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if not trust_pickle:
                raise CheckpointError(
                    f"{path} is a pickled object (e.g. a {{centroids, dimension, stride}} dict); unpickling can run "
                    "arbitrary code, so it is refused. If you trust the file, pass trust_pickle=True "
                    "(CLI: --trust-pickle)."
                ) from exc
            loaded = np.load(path, allow_pickle=True)  # explicit opt-in above
            item = loaded.item() if loaded.size == 1 else None
            if not isinstance(item, dict) or "centroids" not in item:
                raise CheckpointError(f"{path}: pickled object is not a dict with 'centroids'") from exc
            centroids = np.asarray(item["centroids"])
            dimension = int(item.get("dimension", item.get("dim", dimension or 0))) or dimension
            stride = int(item["stride"]) if "stride" in item else stride
    if not np.issubdtype(np.asarray(centroids).dtype, np.number):
        raise CheckpointError(f"{path}: centroids must be a numeric array, got dtype {np.asarray(centroids).dtype}")
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if centroids.ndim != 2:
        raise CheckpointError(f"{path}: centroids must be a [K, dimension] array, got shape {centroids.shape}")
    dimension = dimension or centroids.shape[1]
    if dimension != centroids.shape[1]:
        raise CheckpointError(f"{path}: dimension {dimension} does not match centroids of width {centroids.shape[1]}")
    if stride is None:
        raise CheckpointError(f"{path} stores no stride; pass stride= (the earlier tool's centroids.npy used stride 8)")
    return centroids, int(dimension), int(stride)
