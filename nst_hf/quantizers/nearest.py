"""Exact nearest-codebook-vector search (squared L2, ties to the lower index): :class:`NearestCodeSearch`,
used by the VQ codebook, every RVQ level and the K-Means centroids.

Scores are fp32 ``|c|² − 2 x·c`` (``|x|²`` does not change the winner), from one of three backends: on
CPU the fused C kernel of :mod:`nst_hf.quantizers.fused` when it is built, otherwise (and on GPUs) one
matrix product per block of rows followed by a two-level minimum, or a faiss ``IndexFlatL2``. fp32 rounding depends on the
evaluation order (kernel, blocking, batch), so on its own the winner of a near-tie could depend on
which other vectors share the batch. So every vector whose runner-up lies within a bound on the fp32
error of the winner is decided again by float64 distances to its candidate codes, each summed in one
fixed order (C or NumPy, the same bits). The result depends only on the vector, never on the path or
the batch; two codes closer than float64 rounding (~1e-13 relative) go to the lower float64 distance.
"""

from __future__ import annotations

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


def _check_finite(best_scores) -> None:
    """A NaN/inf vector gives a non-finite best score; refuse it rather than return an arbitrary code."""
    finite = np.isfinite(best_scores).all() if isinstance(best_scores, np.ndarray) else bool(torch.isfinite(best_scores).all())
    if not finite:
        raise ValueError("vectors to quantize contain NaN or inf; the encoder input must be finite")


def prove_winners(vectors: np.ndarray, codebook: np.ndarray, index: np.ndarray, best_distance: np.ndarray,
                  runner_up_distance: np.ndarray, x_sq: np.ndarray, score_terms: int | None = None,
                  candidates=None) -> np.ndarray:
    """Make an fp32 best-two search exact: every row whose runner-up lies within the fp32 error bound of
    its winner is decided again in float64 among the codes that may win.

    ``best_distance`` / ``runner_up_distance`` are the search's squared distances, ``x_sq`` = ``|x|²`` per
    row; ``score_terms`` the search's ``n`` in :func:`fp32_score_error_factor` (default: any evaluation
    order); ``index`` (the search's winners) is updated in place and returned. ``candidates(rows, bound)``,
    if given, returns the ``(pair_rows, pair_codes)`` of every code whose score (from a scoring with the same
    error bound) lies within ``bound`` of the search's best score of the row; without it
    :func:`resolve_near_ties` rescores the rows with torch.
    """
    _check_finite(best_distance)
    best_distance = np.asarray(best_distance, dtype=np.float64)
    bound = fp32_distance_error_bound(np.sqrt(x_sq), best_distance, codebook.shape[1], score_terms)
    close = np.flatnonzero(np.asarray(runner_up_distance, dtype=np.float64) - best_distance <= bound)
    if close.size and candidates is None:
        index[close] = resolve_near_ties(vectors, codebook, close)
    elif close.size:
        decided = decide_among(vectors, codebook, *candidates(close, bound[close]))
        if decided.size != close.size:  # the winner's own score is within the bound: cannot happen
            raise RuntimeError(f"near-tie check: {close.size - decided.size} of {close.size} rows got no candidate "
                               "code; please report this with the codebook and vectors")
        index[close] = decided
    return index


def smallest_two(scores: torch.Tensor, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


class NearestCodeSearch:
    """Exact nearest code of one fixed codebook ``[K, D]``, whatever the backend or the batch.

    The search owns a snapshot of the codebook and what its backend needs (the fused kernel's packed
    layout, a faiss index, the torch tensors on their device), built on first use and never pickled:
    a copy sent to a worker process rebuilds them there. Each backend finds an fp32 winner and
    runner-up per vector; :func:`prove_winners` then decides every near-tie in float64, so all backends
    return the same codes.

    Parameters
    ----------
    codebook : numpy.ndarray or torch.Tensor
        ``[K, D]`` code vectors; a tensor's device is where the torch backend runs.
    backend : str
        ``"auto"`` (the fused kernel for CPU vectors when it is built, else ``fallback``), ``"fused"``,
        ``"torch"`` or ``"faiss"``.
    fallback : str
        What ``"auto"`` uses where the fused kernel cannot run: ``"torch"`` or ``"faiss"`` (CPU only;
        GPU tensors always go to torch).
    block_rows : int
        Rows per matrix-product block of the torch backend (keeps the ``[rows, K]`` scores cache-sized).
    """

    BACKENDS = ("auto", "fused", "torch", "faiss")

    def __init__(self, codebook, backend: str = "auto", block_rows: int = BLOCK_ROWS, fallback: str = "torch"):
        if backend not in self.BACKENDS:
            raise ValueError(f"backend must be one of {self.BACKENDS}, got {backend!r}")
        if fallback not in ("torch", "faiss"):
            raise ValueError(f"fallback must be 'torch' or 'faiss', got {fallback!r}")
        self.fallback = fallback
        if isinstance(codebook, torch.Tensor):
            self._tensor = codebook.detach().clone()
            self.codebook = self._tensor.cpu().numpy()
        else:
            self.codebook = np.array(codebook, copy=True)
            self._tensor = torch.from_numpy(self.codebook)
        if self.codebook.ndim != 2 or 0 in self.codebook.shape:
            raise ValueError(f"codebook must be a non-empty [K, D] array, got shape {self.codebook.shape}")
        self.backend = backend
        self.block_rows = int(block_rows)
        self._packed = self._pruned = self._faiss = self._torch_parts = None

    def __reduce__(self):
        return (type(self), (self.codebook, self.backend, self.block_rows, self.fallback))

    @property
    def num_codes(self) -> int:
        return self.codebook.shape[0]

    @property
    def dim(self) -> int:
        return self.codebook.shape[1]

    def backend_for(self, vectors) -> str:
        """The backend that searches ``vectors`` (``"auto"`` resolved)."""
        if self.backend != "auto":
            return self.backend
        on_cpu = not isinstance(vectors, torch.Tensor) or vectors.device.type == "cpu"
        if not on_cpu:
            return "torch"
        return "fused" if self.codebook.dtype == np.float32 and fused.available() else self.fallback

    def __call__(self, vectors, threads: int | None = None):
        """Codes (int64 ``[N]``) of ``vectors`` ``[N, D]``: a tensor on the vectors' device for a tensor,
        else a NumPy array. ``threads``: the fused kernel's thread count (torch's by default)."""
        as_tensor = isinstance(vectors, torch.Tensor)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be [N, {self.dim}], got shape {tuple(vectors.shape)}")
        backend = self.backend_for(vectors)
        if vectors.shape[0] == 0:
            codes = np.zeros(0, dtype=np.int64)
        elif backend == "torch":
            device_codes = self._search_torch(vectors if as_tensor else torch.from_numpy(np.asarray(vectors)))
            return device_codes if as_tensor else device_codes.cpu().numpy()
        else:
            x = vectors.detach().cpu().numpy() if as_tensor else vectors
            x = np.ascontiguousarray(x, dtype=self.codebook.dtype)
            codes = self._search_fused(x, threads) if backend == "fused" else self._search_faiss(x)
        return torch.from_numpy(codes).to(vectors.device) if as_tensor else codes

    def _search_fused(self, x: np.ndarray, threads: int | None) -> np.ndarray:
        if self.codebook.dtype != np.float32:
            raise ValueError("backend='fused' needs an fp32 codebook; use backend='auto' elsewhere")
        if self._packed is None:
            self._packed = fused.PackedCodebook(self.codebook)
        kernel = fused.kernel_name()
        threads = threads or torch.get_num_threads()
        if fused.pruned_search_enabled(kernel, self.num_codes):
            return self._search_pruned(x, threads)
        best, index, second = fused.best_two(x, self._packed, threads, kernel)
        x_sq = np.einsum("ij,ij->i", x, x).astype(np.float64)

        def candidates(rows: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return fused.near_codes(x, self._packed, rows, best[rows].astype(np.float64) + bound, kernel)

        return prove_winners(x, self.codebook, index, best + x_sq, second + x_sq, x_sq,
                             score_terms=fused.score_error_terms(self.dim), candidates=candidates)

    def _search_pruned(self, x: np.ndarray, threads: int) -> np.ndarray:
        """The search that skips groups of codes (:func:`nst_hf.quantizers.fused.best_two_pruned`), then the same
        proof: its skipped codes are farther than the winner by more than the error bound, and near ties are
        rescanned over every code."""
        if self._pruned is None:
            self._pruned = fused.PrunedCodebook(self.codebook)
        pruned = self._pruned
        terms = fused.score_error_terms(self.dim)
        best, packed_index, second, _ = fused.best_two_pruned(x, pruned, fp32_score_error_factor(self.dim, terms),
                                                              threads)
        x_sq = np.einsum("ij,ij->i", x, x).astype(np.float64)

        def candidates(rows: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pair_rows, slots = fused.near_codes(x, pruned.packed, rows, best[rows].astype(np.float64) + bound, "avx512")
            return pair_rows, pruned.order[slots]

        return prove_winners(x, self.codebook, pruned.order[packed_index], best + x_sq, second + x_sq, x_sq,
                             score_terms=terms, candidates=candidates)

    def _search_faiss(self, x: np.ndarray) -> np.ndarray:
        import faiss

        if self._faiss is None:
            self._faiss = faiss.IndexFlatL2(self.dim)
            self._faiss.add(np.ascontiguousarray(self.codebook, dtype=np.float32))
        k = min(2, self.num_codes)
        distances, labels = self._faiss.search(np.ascontiguousarray(x, dtype=np.float32), k)
        index = labels[:, 0].astype(np.int64)
        if k == 1:
            _check_finite(distances[:, 0])
            return index
        return prove_winners(x, self.codebook, index, distances[:, 0], distances[:, 1],
                             np.einsum("ij,ij->i", x, x).astype(np.float64))

    def _search_torch(self, x: torch.Tensor) -> torch.Tensor:
        if self._torch_parts is None or self._torch_parts[0].device != x.device:
            codebook = self._tensor.to(x.device)
            self._torch_parts = (codebook, (codebook * codebook).sum(dim=1), codebook.T.contiguous())
        codebook, codebook_sq, codebook_t = self._torch_parts
        x = x.to(codebook.dtype)
        best, index, second = [], [], []
        for start in range(0, x.shape[0], self.block_rows):
            block = x[start:start + self.block_rows]
            values, winners, runner_up = smallest_two(torch.addmm(codebook_sq, block, codebook_t, alpha=-2.0))
            best.append(values)
            index.append(winners)
            second.append(runner_up)
        x_np = x.cpu().numpy()
        x_sq = np.einsum("ij,ij->i", x_np.astype(np.float64), x_np.astype(np.float64))
        codes = prove_winners(x_np, self.codebook, torch.cat(index).cpu().numpy(),
                              torch.cat(best).cpu().numpy().astype(np.float64) + x_sq,
                              torch.cat(second).cpu().numpy().astype(np.float64) + x_sq, x_sq)
        return torch.from_numpy(codes).to(x.device)


def nearest_codes(x, codebook, block_rows: int = BLOCK_ROWS, method: str = "auto"):
    """One-off search: ``NearestCodeSearch(codebook, method, block_rows)(x)``. Keep a
    :class:`NearestCodeSearch` instead when the same codebook is searched again."""
    return NearestCodeSearch(codebook, method, block_rows)(x)
