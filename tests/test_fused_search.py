"""The fused C search kernel: built, exact after the near-tie check, and equal to the torch and faiss paths."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nst_hf.quantizers import fused
from nst_hf.quantizers.nearest import NearestCodeSearch, decide_exactly, fp32_score_error_factor, nearest_codes


# every test here exercises the compiled kernel (alone or against the other backends)
pytestmark = pytest.mark.usefixtures("native_search")


def _exact_scores(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """``|c|² − 2x·c`` in float64 (exact enough to measure fp32 errors)."""
    x64, c64 = x.astype(np.float64), codebook.astype(np.float64)
    return (c64 * c64).sum(1)[None, :] - 2.0 * x64 @ c64.T


def test_kernel_is_built_and_picks_the_path_the_cpu_and_environment_allow():
    """The package installs with a C compiler here, so losing the kernel must fail loudly, not just be slower;
    NST_HF_DISABLE_FUSED=1 turns it off and NST_HF_FUSED_KERNEL=generic forces the portable path."""
    assert fused.available() == (os.environ.get("NST_HF_DISABLE_FUSED", "") in ("", "0"))
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("CPU flags are read from /proc/cpuinfo (Linux)")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    fastest = "avx512" if "avx512f" in flags else "avx2" if {"avx2", "fma"} <= flags else "generic"
    forced = os.environ.get("NST_HF_FUSED_KERNEL", "")
    assert fused.kernel_name() == (forced if forced in fused.supported_kernels() else fastest)


@pytest.mark.parametrize("num_codes,dim,offset", [(8192, 64, 0), (1000, 48, 0), (17, 5, 0), (1, 3, 0), (1024, 512, 0),
                                                  (300, 130, 0), (256, 512, 1.0)])
def test_best_two_scores_within_the_error_bound(num_codes, dim, offset):
    """Kernel scores err by at most γ_n(|c|² + 2|x||c|), n = score_error_terms(D) (blocked sums), also for
    all-positive vectors whose rounding errors pile up (offset 1)."""
    rng = np.random.default_rng(num_codes + dim)
    codebook = (offset + rng.standard_normal((num_codes, dim)) * (0.05 if offset else 3)).astype(np.float32)
    x = (offset + rng.standard_normal((301, dim)) * (0.05 if offset else 3)).astype(np.float32)  # 301: not a multiple of the 6-row tile
    exact = _exact_scores(x, codebook)
    order = np.argsort(exact, axis=1, kind="stable")
    x_norm = np.linalg.norm(x.astype(np.float64), axis=1)
    c_norm = np.linalg.norm(codebook.astype(np.float64), axis=1)
    gamma = fp32_score_error_factor(dim, fused.score_error_terms(dim))
    for threads in (1, 2, 3):
        best, index, second = fused.best_two(x, fused.PackedCodebook(codebook), threads)
        rows = np.arange(len(x))
        # every fp32 score errs by at most γ(|c|² + 2|x||c|): check it for the reported best code
        err = np.abs(best - exact[rows, index])
        assert np.all(err <= gamma * (c_norm[index] ** 2 + 2 * x_norm * c_norm[index]))
        # the reported best is the exact winner wherever the exact gap exceeds that error
        if num_codes > 1:
            gap = exact[rows, order[:, 1]] - exact[rows, order[:, 0]]
            clear = gap > 1e-3 * (1 + offset * dim)
            np.testing.assert_array_equal(index[clear], order[clear, 0])
            np.testing.assert_allclose(second, exact[rows, order[:, 1]], rtol=0, atol=1e-3 * (1 + offset * dim))
        else:
            assert np.all(index == 0) and np.all(np.isinf(second))


def test_kernel_sums_dot_products_in_blocks():
    """score_error_terms relies on blocked summation. x = (2^24, 1, 1, ...), c = (1, ...): summed in one
    chain every +1 after 2^24 rounds away; in blocks of DIM_BLOCK the second block's sum survives."""
    assert fused.score_error_terms(512) == fused.DIM_BLOCK + 512 // fused.DIM_BLOCK - 1 + 2
    assert fused.score_error_terms(32) == 32 + 2
    dim = 2 * fused.DIM_BLOCK
    x = np.ones((1, dim), np.float32)
    x[0, 0] = 2.0 ** 24
    best, index, _ = fused.best_two(x, fused.PackedCodebook(np.ones((1, dim), np.float32)))
    assert index[0] == 0
    assert best[0] == np.float32(dim - 2 * (2.0 ** 24 + fused.DIM_BLOCK))  # one chain would give dim - 2^25


def test_torch_scores_also_within_the_error_bound():
    """The bound must hold for MKL's blocked products too (they feed the same near-tie check)."""
    rng = np.random.default_rng(1)
    codebook = rng.standard_normal((4096, 64)).astype(np.float32) * 4
    x = rng.standard_normal((512, 64)).astype(np.float32) * 4
    cb = torch.from_numpy(codebook)
    scores = torch.addmm((cb * cb).sum(1), torch.from_numpy(x), cb.T, alpha=-2.0).numpy().astype(np.float64)
    err = np.abs(scores - _exact_scores(x, codebook))
    x_norm = np.linalg.norm(x.astype(np.float64), axis=1)[:, None]
    c_norm = np.linalg.norm(codebook.astype(np.float64), axis=1)[None, :]
    assert np.all(err <= fp32_score_error_factor(64) * (c_norm ** 2 + 2 * x_norm * c_norm))


def test_fused_and_torch_paths_are_exact_on_planted_ties():
    generator = torch.Generator().manual_seed(0)
    codebook = torch.randn(300, 16, generator=generator)
    codebook[7] = codebook[3]  # duplicate code: ties go to the lower index
    x = torch.randn(2000, 16, generator=generator)
    x[:20] = codebook[3]
    x[20:40] = (codebook[10] + codebook[11]) / 2  # equidistant (up to rounding) from two codes
    exact = decide_exactly(x.numpy(), codebook.numpy())
    for method in ("fused", "torch"):
        np.testing.assert_array_equal(nearest_codes(x, codebook, method=method).numpy(), exact)
    assert (exact[:20] == 3).all()


def test_fused_equals_torch_on_real_latents(vq1, rvq, demo_reads):
    """Real encoder outputs (8192 × 64 and 4 × 1024 × 512 codebooks): identical codes from both paths."""
    signal = demo_reads[0].signal_pa[:60000]
    for tok in (vq1, rvq):
        y = torch.from_numpy(tok.preprocess_signal(signal))[None, None]
        with torch.inference_mode():
            latent = tok.model.encode_latent(y)[0].T.contiguous()
        residual = latent
        for codebook in tok.model.codebooks:
            by_fused = nearest_codes(residual, codebook, method="fused")
            np.testing.assert_array_equal(by_fused.numpy(), nearest_codes(residual, codebook, method="torch").numpy())
            residual = residual - codebook[by_fused]


@pytest.mark.slow
def test_generic_kernel_gives_the_same_codes(tmp_path):
    """The portable C path (CPUs without AVX2, forced by NST_HF_FUSED_KERNEL=generic) agrees with the SIMD path."""
    rng = np.random.default_rng(5)
    codebook = rng.standard_normal((530, 24)).astype(np.float32)
    x = rng.standard_normal((777, 24)).astype(np.float32)
    np.save(tmp_path / "codebook.npy", codebook)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import json, sys, numpy as np\n"
        "from nst_hf.quantizers import fused\n"
        "from nst_hf.quantizers.nearest import NearestCodeSearch\n"
        f"cb = np.load({str(tmp_path / 'codebook.npy')!r}); x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "codes = NearestCodeSearch(cb, 'fused')(x, threads=2)\n"
        "print(json.dumps({'kernel': fused.kernel_name(), 'codes': codes.tolist()}))\n"
    )
    env = {**os.environ, "NST_HF_FUSED_KERNEL": "generic"}
    result = json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                       check=True).stdout)
    assert result["kernel"] == "generic"
    np.testing.assert_array_equal(result["codes"], NearestCodeSearch(codebook, "fused")(x))
    np.testing.assert_array_equal(result["codes"], decide_exactly(x, codebook))


def test_non_finite_vectors_are_refused():
    codebook = torch.randn(64, 8)
    x = torch.randn(10, 8)
    x[4, 2] = float("nan")
    for method in ("fused", "torch"):
        with pytest.raises(ValueError, match="NaN or inf"):
            nearest_codes(x, codebook, method=method)


def test_a_search_owns_its_codebook_and_the_model_sees_every_change(vq1):
    """A NearestCodeSearch keeps a snapshot (a later edit of the source cannot make it stale or wrong), and the
    model rebuilds its searches when its codebooks change in place."""
    codebook = torch.randn(100, 8)
    x = torch.randn(50, 8)
    search = NearestCodeSearch(codebook, "fused")
    before = search(x)
    codebook[before[0]] += 100.0  # the first vector's code moves far away
    np.testing.assert_array_equal(search(x).numpy(), before.numpy())  # the snapshot is unchanged
    fresh = NearestCodeSearch(codebook, "fused")(x)
    np.testing.assert_array_equal(fresh.numpy(), decide_exactly(x.numpy(), codebook.numpy()))
    assert fresh[0] != before[0]

    model = copy.deepcopy(vq1.model)
    latent = model.codebooks[0][:5].clone() + 1e-3
    first = model.quantize(latent)[:, 0]
    with torch.no_grad():
        model.codebooks[0, first[0]] += 100.0
    assert model.quantize(latent)[0, 0] != first[0]


def _search_in_child(queue):
    rng = np.random.default_rng(2)
    codebook = rng.standard_normal((256, 16)).astype(np.float32)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    queue.put(NearestCodeSearch(codebook, "fused")(x, threads=2).tolist())


def test_thread_pool_survives_fork():
    """datasets.map forks worker processes after the parent searched: the child must get its own threads."""
    rng = np.random.default_rng(2)
    codebook = rng.standard_normal((256, 16)).astype(np.float32)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    expected = NearestCodeSearch(codebook, "fused")(x, threads=2)  # pool started here
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_search_in_child, args=(queue,))
    child.start()
    codes = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(codes, expected)


def test_kmeans_fused_faiss_and_torch_agree(kmeans, demo_reads):
    windows = np.ascontiguousarray(np.concatenate([kmeans.windows(kmeans.preprocess_signal(r.signal_pa))
                                                   for r in demo_reads[:4]]))
    by_fused = NearestCodeSearch(kmeans.centroids, "fused")(windows)
    np.testing.assert_array_equal(by_fused, NearestCodeSearch(kmeans.centroids, "faiss")(windows))
    np.testing.assert_array_equal(
        by_fused, nearest_codes(torch.from_numpy(windows), torch.from_numpy(kmeans.centroids), method="torch").numpy())
    rows = np.linspace(0, len(windows) - 1, 40).astype(int)
    np.testing.assert_array_equal(by_fused[rows], decide_exactly(windows[rows], kmeans.centroids))


def test_tokenizers_give_identical_tokens_without_the_kernel(vq1, kmeans, demo_reads, monkeypatch):
    """NST_HF_DISABLE_FUSED=1 (or a build without a compiler) switches to torch/faiss with the same tokens."""
    signals = [r.signal_pa[:40000] for r in demo_reads[:3]]
    latent, windows = torch.zeros(1, vq1.model.config.dim), np.zeros((1, kmeans.dimension), np.float32)
    monkeypatch.delenv("NST_HF_DISABLE_FUSED", raising=False)
    assert vq1.model.code_searches()[0].backend_for(latent) == "fused" and kmeans.search.backend_for(windows) == "fused"
    with_kernel = [vq1.encode_signals_to_codes(signals), kmeans.encode_signals_to_codes(signals)]
    monkeypatch.setenv("NST_HF_DISABLE_FUSED", "1")
    assert vq1.model.code_searches()[0].backend_for(latent) == "torch" and kmeans.search.backend_for(windows) == "faiss"
    without = [vq1.encode_signals_to_codes(signals), kmeans.encode_signals_to_codes(signals)]
    for a_list, b_list in zip(with_kernel, without):
        for a, b in zip(a_list, b_list):
            np.testing.assert_array_equal(a, b)
