"""Token strings: ``<|bwav:N|>`` (VQ, K-Means) and ``<|bwav:Lk_N|>`` (RVQ level k), plus special tokens."""

from __future__ import annotations

import re

import numpy as np

TOKEN_PATTERN = r"<\|bwav:(?:L[0-9]+_)?[0-9]+\|>"  # ASCII digits only: ``\d`` also matches "٣" or "５"
TOKEN_RE = re.compile(r"<\|bwav:(?:L([0-9]+)_)?([0-9]+)\|>")
SPECIAL_TOKENS = {"bos_token": "<|bwav_bos|>", "eos_token": "<|bwav_eos|>", "unk_token": "<|bwav_unk|>",
                  "pad_token": "<|bwav_pad|>"}


def codes_to_text(codes: np.ndarray, rvq: bool) -> str:
    """``[T, levels]`` codes → concatenated token text (levels interleaved per frame for RVQ)."""
    if codes.size == 0:
        return ""
    if not rvq:
        return "".join(f"<|bwav:{c}|>" for c in codes[:, 0].tolist())
    levels = codes.shape[1]
    prefixes = [f"<|bwav:L{level + 1}_" for level in range(levels)]
    return "".join(prefixes[i % levels] + f"{c}|>" for i, c in enumerate(codes.reshape(-1).tolist()))


def codes_to_tokens(codes: np.ndarray, rvq: bool) -> list[str]:
    """Like :func:`codes_to_text` but one string per token."""
    if codes.size == 0:
        return []
    if not rvq:
        return [f"<|bwav:{c}|>" for c in codes[:, 0].tolist()]
    levels = codes.shape[1]
    return [f"<|bwav:L{i % levels + 1}_{c}|>" for i, c in enumerate(codes.reshape(-1).tolist())]


def codes_to_ids(codes: np.ndarray, codebook_size: int, rvq: bool) -> np.ndarray:
    """``[T, levels]`` codes → flat int64 ids: ``code`` (VQ/K-Means) or ``level * K + code`` (RVQ)."""
    if not rvq:
        return codes[:, 0].astype(np.int64)
    offsets = np.arange(codes.shape[1], dtype=np.int64) * codebook_size
    return (codes.astype(np.int64) + offsets).reshape(-1)
