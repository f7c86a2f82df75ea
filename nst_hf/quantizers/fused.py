"""CPU fast path of the nearest-code search: the fused C kernel ``_fused_search`` run on a few threads.

A matrix product followed by a minimum writes and re-reads a ``[rows, K]`` score block; for the small
``D`` of these codebooks (32–64) that memory traffic, not arithmetic, bounds the search. The kernel
keeps each tile of scores in registers (14 rows × 32 codes on AVX-512, 6 rows × 16 codes on AVX2) and
returns per row the best score, its code and the runner-up score, which is all the exactness check in
:mod:`nst_hf.quantizers.nearest` needs.

The kernel has three code paths, ``"avx512"``, ``"avx2"`` and ``"generic"`` (portable C); the fastest
one the CPU supports runs unless ``NST_HF_FUSED_KERNEL`` names another. A named path this CPU lacks
falls back to the best supported path below it, with a logged warning (a script that forces a path
still runs on every machine); a name that is no path raises ``ValueError`` at the first search.

Rows whose runner-up is within the error bound are rescanned by the same passes (:func:`near_codes`),
which return every code within the bound for the float64 decision. :func:`best_two_pruned` is an
experimental exact search that skips groups of codes (``NST_HF_PRUNED_SEARCH=1``, AVX-512 only).

The kernel is optional: it is compiled when nst_hf is installed with a C compiler; without it (or for
tensors on a GPU) the torch path is used. All give identical codes.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from nst_hf._threads import run_in_ranges

try:
    from nst_hf.quantizers import _fused_search
except ImportError:  # built without a C compiler
    _fused_search = None

logger = logging.getLogger(__name__)

#: Codes per register tile: the packed codebook is padded to a multiple of this.
LANES = _fused_search.LANES if _fused_search is not None else 16
#: Dimensions per block of the kernel's blocked dot products (see :func:`score_error_terms`).
DIM_BLOCK = _fused_search.DIM_BLOCK if _fused_search is not None else 64
#: Below this many rows one thread does the whole search (thread start-up would cost more).
MIN_ROWS_PER_THREAD = 64
#: The kernel's code paths, fastest first.
KERNELS = ("avx512", "avx2", "generic")
#: Environment variable that forces a code path (one of :data:`KERNELS`).
KERNEL_ENV = "NST_HF_FUSED_KERNEL"
_resolved: dict[str, str] = {}


def available() -> bool:
    """Whether the compiled kernel is importable (``NST_HF_DISABLE_FUSED=1`` turns it off)."""
    return _fused_search is not None and os.environ.get("NST_HF_DISABLE_FUSED", "") in ("", "0")


def supported_kernels() -> dict[str, int]:
    """``{path: rows per register tile}`` of the code paths this build and CPU can run, fastest first."""
    return dict(_fused_search.kernels()) if _fused_search is not None else {}


def kernel_name() -> str | None:
    """The code path searches run on: ``"avx512"``, ``"avx2"`` or ``"generic"``; None without the kernel.

    The fastest supported path, or the one ``NST_HF_FUSED_KERNEL`` names (see the module docstring for a
    path this CPU lacks). Raises ``ValueError`` when the variable names no path.
    """
    if _fused_search is None:
        return None
    forced = os.environ.get(KERNEL_ENV, "").strip().lower()
    if forced not in _resolved:
        _resolved[forced] = _resolve_kernel(forced, supported_kernels())
    return _resolved[forced]


def _resolve_kernel(forced: str, supported: dict[str, int]) -> str:
    """The path to run for the requested name ``forced`` ("" = no request) among ``supported``."""
    if not forced:
        return next(iter(supported))
    if forced not in KERNELS:
        raise ValueError(f"{KERNEL_ENV}={forced!r} is not a kernel path; set it to one of {', '.join(KERNELS)} "
                         "or unset it to use the fastest path this CPU supports")
    if forced in supported:
        return forced
    fallback = next(name for name in KERNELS[KERNELS.index(forced):] if name in supported)
    logger.warning("%s=%s: this CPU (or build) has no %s path; searching with %s instead (supported: %s)",
                   KERNEL_ENV, forced, forced, fallback, ", ".join(supported))
    return fallback


def row_tile(kernel: str | None = None) -> int:
    """Rows per register tile of ``kernel`` (default: :func:`kernel_name`); thread shares are multiples of it."""
    return supported_kernels().get(kernel or kernel_name(), 1)


def score_error_terms(dim: int) -> int:
    """``n`` such that every kernel score errs by at most ``γ_n (|c|² + 2|x||c|)`` (``γ_n = nu / (1 − nu)``).

    The kernel sums each dot product in blocks of :data:`DIM_BLOCK` dimensions (one rounding per
    product-add) and then the block sums in order, so a product passes through at most
    ``DIM_BLOCK + ceil(D / DIM_BLOCK) − 1`` roundings; the norm (float64, rounded once) and the final
    ``|c|² − 2t`` add two more. For ``D = 512`` that is ``γ_73`` where any summation order needs ``γ_513``.
    """
    blocks = -(-dim // DIM_BLOCK)
    return (dim if blocks <= 1 else DIM_BLOCK + blocks - 1) + 2


class PackedCodebook:
    """A codebook laid out for the kernel: ``[K/16, D, 16]`` float32 plus ``|c|²`` (+inf for padding).

    Parameters
    ----------
    codebook : numpy.ndarray
        ``[K, D]`` code vectors.
    """

    def __init__(self, codebook: np.ndarray):
        codebook = np.asarray(codebook, dtype=np.float32)
        if codebook.ndim != 2 or codebook.shape[0] == 0 or codebook.shape[1] == 0:
            raise ValueError(f"codebook must be a non-empty [K, D] array, got shape {codebook.shape}")
        self.num_codes, self.dim = codebook.shape
        padded_codes = -(-self.num_codes // LANES) * LANES
        padded = np.zeros((padded_codes, self.dim), dtype=np.float32)
        padded[:self.num_codes] = codebook
        self.packed = np.ascontiguousarray(padded.reshape(-1, LANES, self.dim).transpose(0, 2, 1))
        self.norms = np.full(padded_codes, np.inf, dtype=np.float32)
        # float64 then rounded once: the error bound of score_error_terms counts one rounding for |c|²
        self.norms[:self.num_codes] = np.einsum("ij,ij->i", codebook.astype(np.float64), codebook.astype(np.float64))
        self.padded_codes = padded_codes


#: Codebooks with fewer codes are searched densely (the bounds cost more than they could skip).
PRUNE_MIN_CODES = 1024
#: Codes per group of the pruned search (its groups are clusters of about this many codes).
PRUNE_GROUP_CODES = 64


def _cluster(codebook: np.ndarray, groups: int, iterations: int = 8, seed: int = 0) -> np.ndarray:
    """Cluster of each code (a few Lloyd iterations in float64, seeded): any grouping keeps the search exact,
    a tighter one lets it skip more."""
    rng = np.random.default_rng(seed)
    centres = codebook[rng.choice(codebook.shape[0], groups, replace=False)].copy()
    for _ in range(iterations):
        assign = np.argmin(np.einsum("ij,ij->i", centres, centres)[None, :] - 2.0 * codebook @ centres.T, axis=1)
        counts = np.bincount(assign, minlength=groups)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, codebook)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return assign


class PrunedCodebook:
    """A codebook packed for the exact search that skips codes: codes sorted by cluster, the packed tiles cut
    into groups of contiguous tiles, each with the float64 centre and radius of its codes.

    ``order[p]`` is the original code at packed position ``p``; ``group_tiles`` the first tile of each group
    (and the tile count at the end).
    """

    def __init__(self, codebook: np.ndarray, group_codes: int = PRUNE_GROUP_CODES):
        codebook = np.asarray(codebook, dtype=np.float32)
        c64 = codebook.astype(np.float64)
        assign = _cluster(c64, max(1, codebook.shape[0] // group_codes))
        # each cluster padded to whole tiles with unreachable codes (norm +inf): a group is exactly one cluster
        sizes = np.bincount(assign)
        sizes = sizes[sizes > 0]
        padded = -(-sizes // LANES) * LANES
        self.group_tiles = np.r_[0, np.cumsum(padded // LANES)].astype(np.int64)
        self.order = np.full(int(padded.sum()), -1, dtype=np.int64)
        slots = np.concatenate([start + np.arange(size) for start, size in zip(self.group_tiles[:-1] * LANES, sizes)])
        self.order[slots] = np.argsort(assign, kind="stable")
        layout = np.zeros((self.order.size, codebook.shape[1]), dtype=np.float32)
        layout[slots] = codebook[self.order[slots]]
        self.packed = PackedCodebook(layout)
        self.packed.norms[self.order == -1] = np.inf
        sorted_codes = np.where((self.order >= 0)[:, None], layout.astype(np.float64), np.nan)
        num_groups = self.group_tiles.size - 1
        self.centres = np.zeros((num_groups, codebook.shape[1]))
        self.radius = np.zeros(num_groups)
        for g in range(num_groups):
            members = sorted_codes[self.group_tiles[g] * LANES:self.group_tiles[g + 1] * LANES]
            members = members[~np.isnan(members[:, 0])]  # padding excluded
            self.centres[g] = members.mean(axis=0)
            self.radius[g] = np.sqrt(((members - self.centres[g]) ** 2).sum(axis=1).max())
        self.radius = self.radius * (1 + 1e-12) + 1e-300  # float64 rounding of the radius, rounded outward
        padded_groups = -(-num_groups // 8) * 8  # the bounds kernel takes 8 groups per vector
        self.centres_t = np.zeros((codebook.shape[1], padded_groups))
        self.centres_t[:, :num_groups] = self.centres.T
        self.radius_padded = np.zeros(padded_groups)
        self.radius_padded[:num_groups] = self.radius
        self.centre_sq = np.zeros(padded_groups)
        self.centre_sq[:num_groups] = np.einsum("ij,ij->i", self.centres, self.centres)

    @property
    def num_groups(self) -> int:
        return self.group_tiles.size - 1

    def lower_bounds(self, x: np.ndarray, threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``[N, groups]`` fp32 lower bounds (rounded down) on the squared distance from each row to any code
        of each group, each row's nearest group centre and its float64 ``|x|²`` (the C kernel, AVX-512, on
        ``threads`` threads; every float64 step is lowered by more than its rounding error)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows, dim = x.shape
        bounds = np.empty((rows, self.num_groups), dtype=np.float32)
        nearest_group = np.empty(rows, dtype=np.int64)
        x_sq = np.empty(rows, dtype=np.float64)

        def run(start: int, stop: int) -> None:
            _fused_search.group_bounds(x, self.centres_t, self.centre_sq, self.radius_padded, bounds, nearest_group, x_sq, rows, dim,
                                       self.num_groups, self.centres_t.shape[1], start, stop)

        run_in_ranges("search", run, rows, min(int(threads), rows // MIN_ROWS_PER_THREAD))
        return bounds, nearest_group, x_sq


#: Environment variable that turns on the search that skips codes (experimental; see :func:`best_two_pruned`).
PRUNED_ENV = "NST_HF_PRUNED_SEARCH"


def pruned_search_enabled(kernel: str, num_codes: int) -> bool:
    """Whether :class:`~nst_hf.quantizers.nearest.NearestCodeSearch` skips codes: ``NST_HF_PRUNED_SEARCH=1``, the
    avx512 path and at least :data:`PRUNE_MIN_CODES` codes. Off by default: it visits 35–45 % of the code tiles
    of the VQ/RVQ fixtures' real latents but ~85 % for K-Means windows, and a visited tile costs about twice a
    dense one (groups scattered over L2, a cutoff per group), so it gains little over the dense search (see the
    README)."""
    return os.environ.get(PRUNED_ENV, "") == "1" and kernel == "avx512" and num_codes >= PRUNE_MIN_CODES


def best_two_pruned(x: np.ndarray, codebook: PrunedCodebook, gamma: float, threads: int = 1
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """:func:`best_two` that skips every group of codes whose bound proves it farther than the row's best by
    more than twice the fp32 error bound (``gamma``: the search's γ, see
    :func:`nst_hf.quantizers.nearest.fp32_score_error_factor`). AVX-512 only.

    Rows are searched in order of their nearest group centre, so that the rows of a register tile skip the
    same groups. Returns best, index (packed positions: map through ``codebook.order``), runner-up over the
    visited codes, and the fraction of code tiles visited.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = x.shape[0]
    bounds, nearest_group, x_sq = codebook.lower_bounds(x, threads)
    perm = np.argsort(nearest_group, kind="stable")  # the kernel reads and writes rows through perm
    best = np.empty(rows, dtype=np.float32)
    index = np.empty(rows, dtype=np.int64)
    second = np.empty(rows, dtype=np.float32)
    visited = []
    packed = codebook.packed

    def run(start: int, stop: int) -> None:
        visited.append(_fused_search.nearest_two_pruned(
            x, packed.packed, packed.norms, bounds, codebook.group_tiles, x_sq, perm, gamma, best, index, second,
            rows, packed.dim, packed.padded_codes, codebook.num_groups, start, stop))

    run_in_ranges("search", run, rows, min(int(threads), rows // MIN_ROWS_PER_THREAD), granule=row_tile("avx512"))
    tiles = packed.padded_codes // LANES
    return best, index, second, sum(visited) / max(1, tiles * -(-rows // row_tile("avx512")))


def best_two(x: np.ndarray, codebook: PackedCodebook, threads: int = 1,
             kernel: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``x`` ``[N, D]``: smallest score ``|c|² − 2x·c``, its (lowest) code, and the runner-up score.

    Scores are fp32 and their rounding differs from any other evaluation; callers must prove winners
    (see :class:`nst_hf.quantizers.nearest.NearestCodeSearch`). ``threads`` splits the rows among threads;
    ``kernel`` picks a code path of :func:`supported_kernels` (default :func:`kernel_name`; one this CPU
    lacks raises ``ValueError``).
    """
    if _fused_search is None:
        raise RuntimeError("the fused search kernel is not built; reinstall nst_hf with a C compiler "
                           "or use nst_hf.quantizers.nearest.NearestCodeSearch, which falls back to torch")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != codebook.dim:
        raise ValueError(f"vectors must be [N, {codebook.dim}], got shape {x.shape}")
    rows = x.shape[0]
    best = np.empty(rows, dtype=np.float32)
    index = np.empty(rows, dtype=np.int64)
    second = np.empty(rows, dtype=np.float32)
    kernel = kernel or kernel_name()
    supported = supported_kernels()
    if kernel not in supported:
        raise ValueError(f"kernel {kernel!r} cannot run here; this CPU and build support {', '.join(supported)}")

    def run(start: int, stop: int) -> None:
        _fused_search.nearest_two(x, codebook.packed, codebook.norms, best, index, second, rows,
                                  codebook.dim, codebook.padded_codes, start, stop, kernel)

    run_in_ranges("search", run, rows, min(int(threads), rows // MIN_ROWS_PER_THREAD), granule=supported[kernel])
    return best, index, second


def near_codes(x: np.ndarray, codebook: PackedCodebook, rows: np.ndarray, limits: np.ndarray,
               kernel: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs of the near-tie check: for each ``x[rows[i]]``, every code whose fp32 score, computed by
    ``kernel``'s scan (the AVX-512 passes themselves; on the other paths the portable blocked sums), is at most
    ``limits[i]`` (float64, rounded up to fp32 so no candidate is lost). Returns ``(pair_rows, pair_codes)``.

    Every path's scores obey the bound of :func:`score_error_terms`, so a limit of the searched winner's score
    plus :func:`nst_hf.quantizers.nearest.fp32_distance_error_bound` keeps every code that may truly win.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    limits = np.asarray(limits, dtype=np.float64)
    limits32 = limits.astype(np.float32)
    limits32 = np.where(limits32 < limits, np.nextafter(limits32, np.float32(np.inf)), limits32)
    kernel = kernel or kernel_name()
    cap = max(64, 32 * rows.size)
    while True:
        out_rows = np.empty(cap, dtype=np.int64)
        out_codes = np.empty(cap, dtype=np.int64)
        found = _fused_search.near_codes(x, codebook.packed, codebook.norms, rows, limits32, out_rows, out_codes,
                                         x.shape[0], codebook.dim, codebook.padded_codes, rows.size, cap, kernel)
        if found <= cap:
            return out_rows[:found], out_codes[:found]
        cap = found


def pair_distances(vectors: np.ndarray, codebook: np.ndarray, rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """float64 ``|vectors[rows[i]] − codebook[codes[i]]|²`` per pair (four partial sums over the dimensions).

    Same operations as :func:`nst_hf.quantizers.nearest.pair_distances_numpy` (equal to the last bit),
    without materialising the ``[pairs, D]`` float64 differences.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    codebook = np.ascontiguousarray(codebook, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    out = np.empty(rows.size, dtype=np.float64)
    _fused_search.pair_distances(vectors, codebook, rows, codes, out, vectors.shape[0], codebook.shape[0],
                                 codebook.shape[1], rows.size)
    return out
