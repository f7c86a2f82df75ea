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
    return "".join(codes_to_tokens(codes, rvq))


def codes_to_tokens(codes: np.ndarray, rvq: bool) -> list[str]:
    """Like :func:`codes_to_text` but one string per token.

    Each string comes from a cached table of token strings (:func:`_token_table`) picked by NumPy indexing,
    about 4× faster than formatting each code: the text of a long read is built once per read in every run.
    """
    if codes.size == 0:
        return []
    codes = codes if rvq else codes[:, :1]
    if int(codes.min()) < 0:
        raise ValueError(f"codes must be non-negative, got {int(codes.min())}")
    table = _token_table(codes.shape[1] if rvq else 0, int(codes.max()) + 1)
    return table[np.arange(codes.shape[1]), codes].reshape(-1).tolist()


_TABLES: dict[int, np.ndarray] = {}


def _token_table(levels: int, size: int) -> np.ndarray:
    """``[max(levels, 1), ≥ size]`` object array of token strings: ``<|bwav:N|>`` (``levels=0``) or
    ``<|bwav:Lk_N|>`` for level k; grown in powers of two from 1024 codes, kept per ``levels``."""
    table = _TABLES.get(levels)
    if table is None or table.shape[1] < size:
        width = max(1024, 1 << (size - 1).bit_length())
        prefixes = ["<|bwav:"] if levels == 0 else [f"<|bwav:L{level + 1}_" for level in range(levels)]
        table = np.array([[f"{prefix}{code}|>" for code in range(width)] for prefix in prefixes], dtype=object)
        _TABLES[levels] = table  # a race only builds the same table twice
    return table


def codes_to_ids(codes: np.ndarray, codebook_size: int, rvq: bool) -> np.ndarray:
    """``[T, levels]`` codes → flat int64 ids: ``code`` (VQ/K-Means) or ``level * K + code`` (RVQ)."""
    if not rvq:
        return codes[:, 0].astype(np.int64)
    offsets = np.arange(codes.shape[1], dtype=np.int64) * codebook_size
    return (codes.astype(np.int64) + offsets).reshape(-1)
