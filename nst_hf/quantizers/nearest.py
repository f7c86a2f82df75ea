"""Exact nearest-codebook-vector search (squared L2, ties to the lower index).

The fast path is one fp32 matrix product per block of rows: ``|c|² − 2 x·c`` (``|x|²`` does not change
the winner). A matrix product's rounding depends on how it is blocked, so on its own the winner of a
near-tie could depend on which other vectors share the batch. So every vector whose runner-up lies
within a bound on the fp32 error of the winner is decided again in float64 (and, if still within
float64 error, by exact differences). The result depends only on the vector, never on the batch.
"""

from __future__ import annotations

import numpy as np
import torch

#: Rows per matrix-product block: keeps the [rows, K] score block cache-sized.
BLOCK_ROWS = 256
_FP32_EPS = float(np.finfo(np.float32).eps)
_FP64_EPS = float(np.finfo(np.float64).eps)


def fp32_distance_error_bound(x_norm, best_distance, dim: int):
    """Bound on the difference between two fp32 evaluations of ``|x − c|²`` for the winning ``c``.

    Uses ``|c| ≤ |x| + sqrt(d_best)`` and a worst-case dot-product error of ``(dim + 2)·eps·(|x| + |c|)²``,
    doubled because two evaluations (this one and any other blocking) may err in opposite directions.
    Works for NumPy arrays and torch tensors.
    """
    lib = torch if isinstance(x_norm, torch.Tensor) else np
    c_norm = x_norm + lib.sqrt(lib.clip(best_distance, 0, None))
    return 2.0 * (dim + 2) * _FP32_EPS * (x_norm + c_norm) ** 2 + 1e-30


def decide_among(vectors: np.ndarray, codebook: np.ndarray, rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """For candidate pairs ``(rows[i], codes[i])`` return the exact (float64) winner of each row.

    Returns an array with one code per distinct row, in ascending row order; ties go to the lower code.
    """
    diff = vectors[rows].astype(np.float64) - codebook[codes].astype(np.float64)
    dist = np.einsum("ij,ij->i", diff, diff)
    order = np.lexsort((codes, dist, rows))
    first = np.ones(order.size, dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    return codes[order][first].astype(np.int64)


def decide_exactly(vectors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest code for each of a few ``vectors`` by exact float64 differences against every code."""
    rows = np.repeat(np.arange(len(vectors)), codebook.shape[0])
    codes = np.tile(np.arange(codebook.shape[0]), len(vectors))
    return decide_among(vectors, codebook, rows, codes)


def best_two(scores: torch.Tensor, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the smallest score, its (lowest) index, and the second-smallest score.

    Two-level reduction (minimum per chunk of ``chunk`` codes, then inside the winning chunk) because
    ``amin`` is vectorised while ``min``/``argmin`` over a long row are several times slower.
    """
    rows, codes = scores.shape
    pad = (-codes) % chunk
    padded = torch.nn.functional.pad(scores, (0, pad), value=float("inf")) if pad else scores
    grouped = padded.view(rows, -1, chunk)
    chunk_min = grouped.amin(dim=2)
    best_chunk = chunk_min.argmin(dim=1)
    row = torch.arange(rows, device=scores.device)
    inside = grouped[row, best_chunk]
    offset = inside.argmin(dim=1)
    values = inside[row, offset]
    inside[row, offset] = float("inf")
    chunk_min[row, best_chunk] = float("inf")
    runner_up = torch.minimum(inside.amin(dim=1), chunk_min.amin(dim=1))
    return values, best_chunk * chunk + offset, runner_up


def resolve_near_ties(vectors: np.ndarray, codebook: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact winners for ``vectors[rows]``: fp32 scores find every code within the error bound, float64 decides."""
    x = torch.from_numpy(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    cb = torch.from_numpy(np.ascontiguousarray(codebook, dtype=np.float32))
    scores = torch.addmm((cb * cb).sum(dim=1), x, cb.T, alpha=-2.0)
    values = scores.amin(dim=1)
    x_sq = (x * x).sum(dim=1)
    limit = values + fp32_distance_error_bound(x_sq.sqrt(), values + x_sq, codebook.shape[1])
    pairs = (scores <= limit[:, None]).nonzero().numpy()
    return decide_among(vectors, codebook, rows[pairs[:, 0]], pairs[:, 1])


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor, block_rows: int = BLOCK_ROWS) -> torch.Tensor:
    """Index of the nearest row of ``codebook`` ``[K, D]`` for each row of ``x`` ``[N, D]`` (int64 ``[N]``)."""
    x = x.to(codebook.dtype)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    if x.shape[0] == 0:
        return out
    codebook_sq = (codebook * codebook).sum(dim=1)
    codebook_t = codebook.T.contiguous()
    dim = codebook.shape[1]
    pair_rows, pair_codes = [], []
    for start in range(0, x.shape[0], block_rows):
        block = x[start:start + block_rows]
        scores = torch.addmm(codebook_sq, block, codebook_t, alpha=-2.0)
        values, index, runner_up = best_two(scores)
        out[start:start + block.shape[0]] = index
        x_sq = (block * block).sum(dim=1)
        limit = values + fp32_distance_error_bound(x_sq.sqrt(), values + x_sq, dim)
        close = runner_up <= limit
        if bool(close.any()):
            # every code within the error bound of the fp32 winner may be the true winner
            rows = close.nonzero(as_tuple=True)[0]
            candidates = (scores[rows] <= limit[rows, None]).nonzero()  # the winner is among them
            pair_rows += [rows[candidates[:, 0]] + start, rows + start]
            pair_codes += [candidates[:, 1], index[rows]]
    if pair_rows:
        rows = torch.cat(pair_rows).cpu().numpy()
        codes = torch.cat(pair_codes).cpu().numpy()
        winners = decide_among(x.cpu().numpy(), codebook.cpu().numpy(), rows, codes)
        out[torch.from_numpy(np.unique(rows)).to(out.device)] = torch.from_numpy(winners).to(out.device)
    return out
