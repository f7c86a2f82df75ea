"""Every code path of the fused search kernel (avx512, avx2, generic) on the same inputs: the same best /
index / runner-up semantics, and the same final codes as the float64 reference.

A path this CPU lacks is skipped with the reason; whether a path is usable is itself checked against the
CPU's flags, so a build that lost a path fails instead of skipping.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from nst_hf.quantizers import fused
from nst_hf.quantizers.nearest import NearestCodeSearch, decide_exactly, fp32_score_error_factor

pytestmark = pytest.mark.usefixtures("native_search")


def _require(kernel: str) -> None:
    if kernel not in fused.supported_kernels():
        pytest.skip(f"this CPU/build has no {kernel} path (supported: {', '.join(fused.supported_kernels())})")


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("CPU flags are read from /proc/cpuinfo (Linux)")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo lists no flags")


def _exact_scores(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    x64, c64 = x.astype(np.float64), codebook.astype(np.float64)
    return (c64 * c64).sum(1)[None, :] - 2.0 * x64 @ c64.T


def test_usable_paths_match_the_cpu_flags():
    """avx512 exactly when the CPU has AVX-512F, avx2 with AVX2+FMA, generic always; fastest first."""
    flags = _cpu_flags()
    expected = [name for name, needs in (("avx512", {"avx512f"}), ("avx2", {"avx2", "fma"})) if needs <= flags]
    assert list(fused.supported_kernels()) == expected + ["generic"]
    assert fused.supported_kernels()["generic"] == 1


def test_default_and_forced_paths(monkeypatch):
    """No variable: the fastest path; NST_HF_FUSED_KERNEL=<path> runs that path with its own row tile."""
    monkeypatch.delenv(fused.KERNEL_ENV, raising=False)
    assert fused.kernel_name() == next(iter(fused.supported_kernels()))
    for kernel, rows in fused.supported_kernels().items():
        monkeypatch.setenv(fused.KERNEL_ENV, kernel)
        assert fused.kernel_name() == kernel
        assert fused.row_tile() == rows
    assert fused.supported_kernels().get("avx512", 14) == 14 and fused.supported_kernels().get("avx2", 6) == 6


def test_a_missing_path_falls_back_with_a_warning_and_a_wrong_name_raises(monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="nst_hf.quantizers.fused"):
        assert fused._resolve_kernel("avx512", {"avx2": 6, "generic": 1}) == "avx2"
        assert fused._resolve_kernel("avx2", {"generic": 1}) == "generic"
        assert fused._resolve_kernel("avx512", {"generic": 1}) == "generic"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and "no avx512 path; searching with avx2" in messages[0]
    monkeypatch.setenv(fused.KERNEL_ENV, "avx-512")
    with pytest.raises(ValueError, match="is not a kernel path; set it to one of avx512, avx2, generic"):
        fused.kernel_name()
    monkeypatch.delenv(fused.KERNEL_ENV)
    codebook = fused.PackedCodebook(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="cannot run here"):
        fused.best_two(np.zeros((2, 4), np.float32), codebook, kernel="sse9")


SHAPES = [  # (codes, dim, rows): K not a multiple of 32 or 16, D not a multiple of 16, D > DIM_BLOCK, odd rows
    (8192, 64, 301), (1000, 48, 97), (17, 5, 33), (1, 3, 7), (1024, 512, 45), (300, 130, 29), (48, 16, 15),
    (272, 256, 43), (33, 70, 200), (2000, 32, 2500)]  # the last: several row and code blocks on every path


@pytest.mark.parametrize("kernel", fused.KERNELS)
@pytest.mark.parametrize("num_codes,dim,num_rows", SHAPES)
def test_every_path_finds_the_best_two_within_the_bound(kernel, num_codes, dim, num_rows):
    """Against float64 scores: the best is within the fp32 bound of the exact best and is the exact winner
    where the gap is clear; the runner-up is the exact runner-up's score; for 1, 2 and 3 threads."""
    _require(kernel)
    rng = np.random.default_rng(num_codes * 7 + dim)
    codebook = (rng.standard_normal((num_codes, dim)) * 3).astype(np.float32)
    x = (rng.standard_normal((num_rows, dim)) * 3).astype(np.float32)
    exact = _exact_scores(x, codebook)
    order = np.argsort(exact, axis=1, kind="stable")
    rows = np.arange(num_rows)
    x_norm = np.linalg.norm(x.astype(np.float64), axis=1)
    c_norm = np.linalg.norm(codebook.astype(np.float64), axis=1)
    gamma = fp32_score_error_factor(dim, fused.score_error_terms(dim))
    packed = fused.PackedCodebook(codebook)
    for threads in (1, 2, 3):
        best, index, second = fused.best_two(x, packed, threads, kernel=kernel)
        assert np.all(np.abs(best - exact[rows, index]) <= gamma * (c_norm[index] ** 2 + 2 * x_norm * c_norm[index]))
        if num_codes == 1:
            assert np.all(index == 0) and np.all(np.isinf(second))
            continue
        clear = exact[rows, order[:, 1]] - exact[rows, order[:, 0]] > 1e-3
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(index[clear], order[clear, 0])
        np.testing.assert_allclose(second, exact[rows, order[:, 1]], rtol=0, atol=1e-3)


@pytest.mark.parametrize("num_codes,dim,num_rows", SHAPES)
def test_the_simd_paths_compute_the_same_scores(num_codes, dim, num_rows):
    """avx512 and avx2 evaluate the same operations (FMA chains per DIM_BLOCK, block sums in order, then
    |c|² − 2t): their best / index / runner-up are equal to the last bit, for any thread split."""
    _require("avx512")
    _require("avx2")
    rng = np.random.default_rng(dim)
    codebook = rng.standard_normal((num_codes, dim)).astype(np.float32)
    x = rng.standard_normal((num_rows, dim)).astype(np.float32)
    packed = fused.PackedCodebook(codebook)
    reference = fused.best_two(x, packed, 1, kernel="avx2")
    for threads in (1, 2):
        for got, want in zip(fused.best_two(x, packed, threads, kernel="avx512"), reference):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kernel", fused.KERNELS)
def test_every_path_breaks_ties_to_the_lowest_code(kernel):
    """Copies of one code in other lanes and tiles (3, 19, 50, 90, 99), and in other code blocks (5, 700, 1500,
    2999 of 3000): the lowest wins, the runner-up equals the best; a codebook of identical codes gives code 0
    everywhere."""
    _require(kernel)
    rng = np.random.default_rng(3)
    codebook = rng.standard_normal((100, 20)).astype(np.float32)
    copies = [19, 50, 90, 99]
    codebook[copies] = codebook[3]
    x = (codebook[3] + 0.01 * rng.standard_normal((61, 20))).astype(np.float32)
    best, index, second = fused.best_two(x, fused.PackedCodebook(codebook), 2, kernel=kernel)
    assert np.all(index == 3)
    np.testing.assert_array_equal(second, best)
    wide = rng.standard_normal((3000, 32)).astype(np.float32)  # copies in different code blocks of each path
    wide[[700, 1500, 2999]] = wide[5]
    near = (wide[5] + 0.01 * rng.standard_normal((1100, 32))).astype(np.float32)
    best, index, second = fused.best_two(near, fused.PackedCodebook(wide), 2, kernel=kernel)
    assert np.all(index == 5)
    np.testing.assert_array_equal(second, best)
    same = np.repeat(codebook[:1], 40, axis=0)
    best, index, second = fused.best_two(x, fused.PackedCodebook(same), 1, kernel=kernel)
    assert np.all(index == 0)
    np.testing.assert_array_equal(second, best)


@pytest.mark.parametrize("kernel", fused.KERNELS)
def test_every_path_reports_non_finite_rows_and_leaves_the_others_alone(kernel):
    """Rows holding NaN or inf come back with a non-finite best score (which NearestCodeSearch refuses) on every
    path; the finite rows of the same tiles keep the codes and scores they have alone."""
    _require(kernel)
    rng = np.random.default_rng(11)
    codebook = rng.standard_normal((200, 32)).astype(np.float32)
    x = rng.standard_normal((45, 32)).astype(np.float32)
    packed = fused.PackedCodebook(codebook)
    clean = fused.best_two(x, packed, 1, kernel=kernel)
    bad = [0, 13, 14, 30, 44]
    dirty = x.copy()
    dirty[bad[:3], 5] = np.nan
    dirty[bad[3], 0] = np.inf
    dirty[bad[4], 31] = -np.inf
    best, index, second = fused.best_two(dirty, packed, 1, kernel=kernel)
    assert not np.isfinite(best[bad]).any()
    good = np.setdiff1d(np.arange(len(x)), bad)
    for got, want in zip((best, index, second), clean):
        np.testing.assert_array_equal(got[good], want[good])
    with pytest.raises(ValueError, match="NaN or inf"):
        NearestCodeSearch(torch.from_numpy(codebook), "fused")(torch.from_numpy(dirty))


@pytest.mark.parametrize("kernel", fused.KERNELS)
def test_every_path_gives_the_exact_codes_on_near_ties(kernel, monkeypatch):
    """Rows midway between two codes (fp32 cannot tell them apart) and duplicates: after the near-tie
    check each path returns the float64 reference's codes."""
    _require(kernel)
    monkeypatch.setenv(fused.KERNEL_ENV, kernel)
    rng = np.random.default_rng(11)
    codebook = rng.standard_normal((530, 37)).astype(np.float32)
    codebook[200] = codebook[7]
    x = rng.standard_normal((400, 37)).astype(np.float32)
    x[:30] = codebook[7]
    x[30:90] = (codebook[rng.integers(0, 530, 60)] + codebook[rng.integers(0, 530, 60)]) / 2
    codes = NearestCodeSearch(codebook, "fused")(x, threads=2)
    np.testing.assert_array_equal(codes, decide_exactly(x, codebook))
    assert np.all(codes[:30] == 7)


def _real_latents(tok, signal) -> torch.Tensor:
    y = torch.from_numpy(tok.preprocess_signal(signal))[None, None]
    with torch.inference_mode():
        return tok.model.encode_latent(y)[0].T.contiguous()


@pytest.mark.parametrize("kernel", fused.KERNELS)
def test_every_path_gives_the_reference_codes_on_real_latents(kernel, vq1, rvq, kmeans, demo_reads, monkeypatch):
    """VQ 8192 × 64, every RVQ level (1024 × 512) and K-Means windows (8192 × 32) of a real read: each path's
    codes equal the torch path's, and a sample of rows equals the float64 reference."""
    _require(kernel)
    signal = demo_reads[0].signal_pa[:30000]
    cases = []
    for tok in (vq1, rvq):
        residual = _real_latents(tok, signal)
        for codebook in tok.model.codebooks:
            cases.append((residual.numpy(), codebook.detach().numpy()))
            residual = residual - codebook[NearestCodeSearch(codebook, "torch")(residual)]
    cases.append((np.ascontiguousarray(kmeans.windows(kmeans.preprocess_signal(signal))), kmeans.centroids))
    monkeypatch.setenv(fused.KERNEL_ENV, kernel)
    for vectors, codebook in cases:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        codes = NearestCodeSearch(codebook, "fused")(vectors, threads=2)
        np.testing.assert_array_equal(codes, NearestCodeSearch(codebook, "torch")(vectors))
        sample = np.linspace(0, len(vectors) - 1, 25).astype(int)
        np.testing.assert_array_equal(codes[sample], decide_exactly(vectors[sample], codebook))


@pytest.mark.parametrize("kernel", fused.KERNELS)
def test_near_codes_keeps_every_code_within_the_limit(kernel):
    """The near-tie scan returns each selected row's codes whose score is <= its limit: all codes clearly
    below (by more than the fp32 error), none clearly above, the row's search winner always, each pair once;
    a limit above every score returns the whole codebook (more pairs than the first buffer holds)."""
    _require(kernel)
    rng = np.random.default_rng(8)
    codebook = rng.standard_normal((300, 70)).astype(np.float32)
    x = rng.standard_normal((90, 70)).astype(np.float32)
    packed = fused.PackedCodebook(codebook)
    best, index, _ = fused.best_two(x, packed, 1, kernel=kernel)
    rows = np.array([0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 40, 89, 3])  # 17: not a multiple of a tile
    exact = _exact_scores(x[rows], codebook)
    limits = best[rows].astype(np.float64) + rng.uniform(0, 30, rows.size)
    pair_rows, pair_codes = fused.near_codes(x, packed, rows, limits, kernel=kernel)
    pairs = set(zip(pair_rows.tolist(), pair_codes.tolist()))
    assert len(pairs) == pair_rows.size
    x_norm = np.linalg.norm(x[rows].astype(np.float64), axis=1)[:, None]
    c_norm = np.linalg.norm(codebook.astype(np.float64), axis=1)[None, :]
    error = fp32_score_error_factor(70, fused.score_error_terms(70)) * (c_norm ** 2 + 2 * x_norm * c_norm)
    for i, row in enumerate(rows):
        got = {code for r, code in pairs if r == row}
        assert index[row] in got
        assert set(np.flatnonzero(exact[i] + error[i] < limits[i])) <= got
        assert got <= set(np.flatnonzero(exact[i] - error[i] <= limits[i]))
    pair_rows, pair_codes = fused.near_codes(x, packed, rows, np.full(rows.size, 1e30), kernel=kernel)
    assert pair_rows.size == rows.size * 300 > 32 * rows.size
    np.testing.assert_array_equal(np.sort(pair_codes[pair_rows == 89]), np.arange(300))


def _codebook_and_vectors(rng, num_codes, dim, rows):
    """Clustered codes (about one cluster per 64, the pruned search's group size) and rows near them, so that whole
    groups can be skipped, plus planted ties."""
    clusters = num_codes // 64
    centres = rng.standard_normal((clusters, dim)) * 3
    codebook = (centres[rng.integers(0, clusters, num_codes)] + rng.standard_normal((num_codes, dim))).astype(np.float32)
    codebook[5] = codebook[900]
    x = (centres[rng.integers(0, clusters, rows)] + rng.standard_normal((rows, dim))).astype(np.float32)
    x[:10] = codebook[900]
    x[10:20] = (codebook[1] + codebook[2]) / 2
    return codebook, x


@pytest.mark.parametrize("num_codes,dim,num_rows", [(2048, 64, 500), (1100, 37, 333), (1024, 512, 100)])
def test_pruned_search_skips_codes_and_matches_the_dense_search(num_codes, dim, num_rows):
    """best_two_pruned (codes grouped, groups skipped by triangle-inequality bounds) finds the dense search's
    best score and winner in every row that the dense search proves, and visits fewer tiles."""
    _require("avx512")
    rng = np.random.default_rng(num_codes + dim)
    codebook, x = _codebook_and_vectors(rng, num_codes, dim, num_rows)
    pruned = fused.PrunedCodebook(codebook)
    gamma = fp32_score_error_factor(dim, fused.score_error_terms(dim))
    best, packed_index, second, visited = fused.best_two_pruned(x, pruned, gamma, threads=2)
    dense_best, dense_index, dense_second = fused.best_two(x, fused.PackedCodebook(codebook), 2, kernel="avx512")
    np.testing.assert_array_equal(best, dense_best)
    clear = dense_second - dense_best > 1e-3
    np.testing.assert_array_equal(pruned.order[packed_index][clear], dense_index[clear])
    assert np.all(second >= dense_second) and np.all(pruned.order[packed_index] >= 0)
    assert visited < 0.8
    exact = _exact_scores(x, codebook)
    bounds, nearest_group, x_sq = pruned.lower_bounds(x, threads=2)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(x_sq, (x64 ** 2).sum(1), rtol=1e-13)
    centre_distance = ((x64[:, None, :] - pruned.centres[None]) ** 2).sum(2)
    picked = centre_distance[np.arange(len(x)), nearest_group]
    assert np.all(picked <= centre_distance.min(1) * (1 + 1e-12))
    for g in range(pruned.group_tiles.size - 1):  # the bounds are lower bounds on every code of the group
        slots = pruned.order[pruned.group_tiles[g] * 16:pruned.group_tiles[g + 1] * 16]
        slots = slots[slots >= 0]
        distance = exact[:, slots] + (x.astype(np.float64) ** 2).sum(1)[:, None]
        assert np.all(bounds[:, g][:, None] <= distance * (1 + 1e-9) + 1e-9)


@pytest.mark.parametrize("kind", ["vq", "rvq"])
def test_pruned_search_gives_the_reference_codes(kind, vq1, rvq, demo_reads, monkeypatch):
    """NST_HF_PRUNED_SEARCH=1: real latents of every level, and clustered vectors with planted ties, give the
    same codes as the dense search and the float64 reference."""
    _require("avx512")
    monkeypatch.delenv("NST_HF_FUSED_KERNEL", raising=False)  # the pruned search runs on the AVX-512 path only
    tok = vq1 if kind == "vq" else rvq
    residual = _real_latents(tok, demo_reads[1].signal_pa[:30000])
    monkeypatch.setenv(fused.PRUNED_ENV, "1")
    for codebook in tok.model.codebooks:
        vectors = np.ascontiguousarray(residual.numpy())
        search = NearestCodeSearch(codebook, "fused")
        codes = search(vectors, threads=2)
        assert search._pruned is not None
        np.testing.assert_array_equal(codes, NearestCodeSearch(codebook, "torch")(vectors))
        sample = np.linspace(0, len(vectors) - 1, 25).astype(int)
        np.testing.assert_array_equal(codes[sample], decide_exactly(vectors[sample], codebook.detach().numpy()))
        residual = residual - codebook[torch.from_numpy(codes)]
    codebook, x = _codebook_and_vectors(np.random.default_rng(4), 1500, 24, 700)
    np.testing.assert_array_equal(NearestCodeSearch(codebook, "fused")(x, threads=2), decide_exactly(x, codebook))
