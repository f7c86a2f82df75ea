"""Exact nearest-codebook-vector search (squared L2, ties to the lower index).

Scores are fp32 ``|c|² − 2 x·c`` (``|x|²`` does not change the winner), from one of two paths: on CPU
the fused C kernel of :mod:`nst_hf.quantizers.fused` when it is built, otherwise (and on GPUs) one
matrix product per block of rows followed by a two-level minimum. fp32 rounding depends on the
evaluation order (kernel, blocking, batch), so on its own the winner of a near-tie could depend on
which other vectors share the batch. So every vector whose runner-up lies within a bound on the fp32
error of the winner is decided again by float64 distances to its candidate codes, each summed in one
fixed order (C or NumPy, the same bits). The result depends only on the vector, never on the path or
the batch; two codes closer than float64 rounding (~1e-13 relative) go to the lower float64 distance.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from nst_hf.quantizers import fused

#: Rows per matrix-product block: keeps the [rows, K] score block cache-sized.
BLOCK_ROWS = 256
_FP32_UNIT_ROUNDOFF = 2.0 ** -24


def fp32_score_error_factor(dim: int, terms: int | None = None) -> float:
    """``γ = n·u / (1 − n·u)``: one fp32 score ``|c|² − 2x·c`` errs by at most ``γ(|c|² + 2|x||c|)``.

    ``terms`` is ``n``; by default ``dim + 1``, which holds for any evaluation: both dot products
    (``D`` products summed in any order, with or without FMA) err by at most ``γ_D`` times the sum of
    absolute terms, and the final addition adds one more rounding. A kernel with a known, shorter
    rounding chain passes its own ``n`` (:func:`nst_hf.quantizers.fused.score_error_terms`).
    """
    n = dim + 1 if terms is None else terms
    return n * _FP32_UNIT_ROUNDOFF / (1.0 - n * _FP32_UNIT_ROUNDOFF)


def fp32_distance_error_bound(x_norm, best_distance, dim: int, terms: int | None = None):
    """Bound on how far the fp32 winner's score may lie below the true winner's.

    If code ``w`` truly beats the fp32 winner ``f``, then ``score(w) ≤ best + e_f + e_w``. Both codes lie
    within ``sqrt(d)`` of ``x`` (``d``: the winner's squared distance), so ``|c| ≤ C = |x| + sqrt(d)`` and
    each error is at most ``γ(C² + 2|x|C)`` (``γ`` from :func:`fp32_score_error_factor` with ``terms``).
    ``best_distance`` is the fp32 estimate of ``d``; its own error is added before the square root, and
    the result is widened by 0.1 % to cover the rounding of the fp32 norms it is computed from (relative
    error ``≤ γ ≈ 4e-6``). Works for NumPy arrays and torch tensors.
    """
    lib = torch if isinstance(x_norm, torch.Tensor) else np
    gamma = fp32_score_error_factor(dim, terms)
    distance = lib.clip(best_distance, 0, None)
    c_norm = x_norm + lib.sqrt(distance)
    distance = distance + 2.0 * gamma * (c_norm * c_norm + 2.0 * x_norm * c_norm)  # the estimate's own error
    c_norm = x_norm + lib.sqrt(distance)
    return 2.002 * gamma * (c_norm * c_norm + 2.0 * x_norm * c_norm) + 1e-30


def decide_among(vectors: np.ndarray, codebook: np.ndarray, rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """For candidate pairs ``(rows[i], codes[i])`` return the exact (float64) winner of each row.

    Returns an array with one code per distinct row, in ascending row order; ties go to the lower code.
    """
    if fused.available() and vectors.dtype == codebook.dtype == np.float32:
        dist = fused.pair_distances(vectors, codebook, rows, codes)
    else:
        dist = pair_distances_numpy(vectors, codebook, rows, codes)
    order = np.lexsort((codes, dist, rows))
    first = np.ones(order.size, dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    return codes[order][first].astype(np.int64)


def pair_distances_numpy(vectors: np.ndarray, codebook: np.ndarray, rows: np.ndarray,
                         codes: np.ndarray) -> np.ndarray:
    """float64 ``|vectors[rows[i]] − codebook[codes[i]]|²``: squares of dimensions ``d ≡ j (mod 4)`` summed in
    order into partial sum ``j``, then ``(s0 + s1) + (s2 + s3)`` — the
    operations of the compiled :func:`nst_hf.quantizers.fused.pair_distances`, equal to the last bit."""
    dist = np.empty(len(rows), dtype=np.float64)
    for first in range(0, len(rows), 4096):  # pairs in chunks: the float64 differences stay cache-sized
        chunk = slice(first, first + 4096)
        diff = vectors[rows[chunk]].astype(np.float64) - codebook[codes[chunk]].astype(np.float64)
        squares = diff * diff
        pad = (-squares.shape[1]) % 4
        if pad:  # adding +0.0 leaves a sum of squares unchanged
            squares = np.pad(squares, ((0, 0), (0, pad)))
        partial = np.zeros((squares.shape[0], 4), dtype=np.float64)
        for start in range(0, squares.shape[1], 4):
            partial += squares[:, start:start + 4]
        dist[chunk] = (partial[:, 0] + partial[:, 1]) + (partial[:, 2] + partial[:, 3])
    return dist


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


def resolve_near_ties(vectors: np.ndarray, codebook: np.ndarray, rows: np.ndarray, block_rows: int = 64) -> np.ndarray:
    """Exact winners for ``vectors[rows]``: fp32 scores find every code within the error bound, float64 decides.

    Rows go in blocks of ``block_rows`` so that the ``[block, K]`` score block stays in cache.
    """
    cb = torch.from_numpy(np.ascontiguousarray(codebook, dtype=np.float32))
    cb_sq, cb_t = (cb * cb).sum(dim=1), cb.T
    pair_rows, pair_codes = [], []
    for start in range(0, len(rows), block_rows):
        block = rows[start:start + block_rows]
        x = torch.from_numpy(np.ascontiguousarray(vectors[block], dtype=np.float32))
        scores = torch.addmm(cb_sq, x, cb_t, alpha=-2.0)
        values = scores.amin(dim=1)
        x_sq = (x * x).sum(dim=1)
        limit = values + fp32_distance_error_bound(x_sq.sqrt(), values + x_sq, codebook.shape[1])
        pairs = (scores <= limit[:, None]).nonzero().numpy()
        pair_rows.append(block[pairs[:, 0]])
        pair_codes.append(pairs[:, 1])
    return decide_among(vectors, codebook, np.concatenate(pair_rows), np.concatenate(pair_codes))


_PACKED_CACHE: OrderedDict[tuple, tuple[np.ndarray, fused.PackedCodebook]] = OrderedDict()


def packed_codebook(codebook: np.ndarray) -> fused.PackedCodebook:
    """The kernel layout of an fp32 codebook, cached for the last few codebooks.

    A cached entry is used only if its stored copy still equals ``codebook`` (memory can be reused by a
    different tensor), so a stale layout can never be searched.
    """
    key = (codebook.__array_interface__["data"][0], codebook.shape)
    entry = _PACKED_CACHE.get(key)
    if entry is not None and np.array_equal(entry[0], codebook):
        _PACKED_CACHE.move_to_end(key)
        return entry[1]
    packed = fused.PackedCodebook(codebook)
    _PACKED_CACHE[key] = (codebook.copy(), packed)
    while len(_PACKED_CACHE) > 16:
        _PACKED_CACHE.popitem(last=False)
    return packed


def _check_finite(best_scores) -> None:
    """A NaN/inf vector gives a non-finite best score; refuse it rather than return an arbitrary code."""
    finite = np.isfinite(best_scores).all() if isinstance(best_scores, np.ndarray) else bool(torch.isfinite(best_scores).all())
    if not finite:
        raise ValueError("vectors to quantize contain NaN or inf; the encoder input must be finite")


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor, block_rows: int = BLOCK_ROWS,
                  method: str = "auto") -> torch.Tensor:
    """Index of the nearest row of ``codebook`` ``[K, D]`` for each row of ``x`` ``[N, D]`` (int64 ``[N]``).

    ``method``: ``"auto"`` (the fused kernel for fp32 CPU tensors when built, else torch), ``"fused"``
    or ``"torch"``. Every method returns the same codes.
    """
    if method not in ("auto", "fused", "torch"):
        raise ValueError(f"method must be 'auto', 'fused' or 'torch', got {method!r}")
    x = x.to(codebook.dtype)
    use_fused = (x.device.type == "cpu" and codebook.dtype == torch.float32 and fused.available()
                 if method == "auto" else method == "fused")
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    if use_fused:
        if x.device.type != "cpu" or codebook.dtype != torch.float32:
            raise ValueError("method='fused' needs fp32 CPU tensors; use method='auto' elsewhere")
        codebook_np = codebook.detach().contiguous().numpy()
        return torch.from_numpy(nearest_codes_fused(x.detach().contiguous().numpy(), packed_codebook(codebook_np),
                                                    codebook_np))
    return _nearest_codes_torch(x, codebook, block_rows)


def nearest_codes_fused(x: np.ndarray, packed: fused.PackedCodebook, codebook: np.ndarray,
                        threads: int | None = None) -> np.ndarray:
    """Exact nearest codes of fp32 ``x`` ``[N, D]`` with the fused kernel (``threads``: torch's count by default)."""
    best, index, second = fused.best_two(x, packed, threads or torch.get_num_threads())
    x_sq = np.einsum("ij,ij->i", x, x).astype(np.float64)
    return prove_winners(x, codebook, index, best + x_sq, second + x_sq, x_sq,
                         score_terms=fused.score_error_terms(packed.dim))


def prove_winners(vectors: np.ndarray, codebook: np.ndarray, index: np.ndarray, best_distance: np.ndarray,
                  runner_up_distance: np.ndarray, x_sq: np.ndarray, score_terms: int | None = None) -> np.ndarray:
    """Make an fp32 best-two search exact: every row whose runner-up lies within the fp32 error bound of
    its winner is decided again by :func:`resolve_near_ties`.

    ``best_distance`` / ``runner_up_distance`` are the search's squared distances, ``x_sq`` = ``|x|²`` per
    row; ``score_terms`` the search's ``n`` in :func:`fp32_score_error_factor` (default: any evaluation
    order); ``index`` (the search's winners) is updated in place and returned.
    """
    _check_finite(best_distance)
    best_distance = np.asarray(best_distance, dtype=np.float64)
    bound = fp32_distance_error_bound(np.sqrt(x_sq), best_distance, codebook.shape[1], score_terms)
    close = np.flatnonzero(np.asarray(runner_up_distance, dtype=np.float64) - best_distance <= bound)
    if close.size:
        index[close] = resolve_near_ties(vectors, codebook, close)
    return index


def _nearest_codes_torch(x: torch.Tensor, codebook: torch.Tensor, block_rows: int) -> torch.Tensor:
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    codebook_sq = (codebook * codebook).sum(dim=1)
    codebook_t = codebook.T.contiguous()
    dim = codebook.shape[1]
    pair_rows, pair_codes = [], []
    for start in range(0, x.shape[0], block_rows):
        block = x[start:start + block_rows]
        scores = torch.addmm(codebook_sq, block, codebook_t, alpha=-2.0)
        values, index, runner_up = best_two(scores)
        _check_finite(values)
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
