"""Search-kernel figures behind issue 13, on the real latents / windows of a signal file.

For each tokenizer: the search rate (GFLOP/s) of every usable fused path on one thread, how many rows the
near-tie check rescans, and the experimental pruned search's share of code tiles visited and its time next
to the dense search (both exact: the codes are checked equal). Timings are the best of ``--repeats``,
alternating the variants, so that load on a shared machine hits them alike.

    python examples/search_kernel_ab.py --trust-pickle ../shared/data/upstream/demo.fast5 \\
        ../shared/fixtures/checkpoints/vq_cnn1_cb8192.pth ../shared/fixtures/checkpoints/rvq_nq4_cb1024.pth \\
        ../shared/data/upstream/centroids_with_meta.npy
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from nst_hf.auto import load_tokenizer
from nst_hf.io import open_reads
from nst_hf.quantizers import fused
from nst_hf.quantizers.nearest import NearestCodeSearch, fp32_distance_error_bound, fp32_score_error_factor


def search_inputs(spec: str, path: str, max_samples: int, trust_pickle: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, codebook)`` of the first search level: latent rows (VQ/RVQ) or windows (K-Means)."""
    tok = load_tokenizer(spec, **({"trust_pickle": True} if trust_pickle and spec.endswith(".npy") else {}))
    signals, total = [], 0
    with open_reads([path]) as source:
        for record in source:
            signals.append(tok.preprocess_signal(record.signal_pa))
            total += record.num_samples
            if total >= max_samples:
                break
    if hasattr(tok, "windows"):
        return np.ascontiguousarray(np.concatenate([tok.windows(s) for s in signals])), tok.centroids
    with torch.inference_mode():
        latent = tok.model.encode_latent(torch.from_numpy(np.concatenate(signals))[None, None])[0].T
    return np.ascontiguousarray(latent.numpy()), tok.model.codebooks[0].detach().numpy()


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def report(spec: str, x: np.ndarray, codebook: np.ndarray, repeats: int) -> None:
    num_codes, dim = codebook.shape
    flop = 2.0 * num_codes * dim * len(x)
    packed = fused.PackedCodebook(codebook)
    rates = {kernel: [] for kernel in fused.supported_kernels() if kernel != "generic"}
    for _ in range(repeats):  # alternating paths
        for kernel in rates:
            rates[kernel].append(flop / best_time(lambda: fused.best_two(x, packed, 1, kernel), 1) / 1e9)
    best, _, second = fused.best_two(x, packed, 1)
    x_sq = np.einsum("ij,ij->i", x, x).astype(np.float64)
    bound = fp32_distance_error_bound(np.sqrt(x_sq), best + x_sq, dim, fused.score_error_terms(dim))
    close = int(((second + x_sq) - (best + x_sq) <= bound).sum())
    print(f"{Path(spec).name}: {len(x)} rows, K={num_codes}, D={dim}; near-tie rows {close} ({close / len(x):.2%})")
    print("  one thread, GFLOP/s (best of each): " + ", ".join(f"{k} {max(v):.1f}" for k, v in rates.items()))
    if "avx512" not in rates or num_codes < fused.PRUNE_MIN_CODES:
        return
    pruned = fused.PrunedCodebook(codebook)
    gamma = fp32_score_error_factor(dim, fused.score_error_terms(dim))
    visited = fused.best_two_pruned(x, pruned, gamma, 2)[3]
    search = NearestCodeSearch(codebook, "fused")
    times = {"dense": [], "pruned": []}
    codes = {}
    for _ in range(repeats):
        for name in times:
            os.environ[fused.PRUNED_ENV] = "1" if name == "pruned" else "0"
            started = time.perf_counter()
            codes[name] = search(x, threads=2)
            times[name].append(time.perf_counter() - started)
    os.environ.pop(fused.PRUNED_ENV)
    assert np.array_equal(codes["dense"], codes["pruned"]), "the pruned search changed a code"
    padded = pruned.packed.padded_codes / num_codes
    print(f"  pruned: visits {visited:.1%} of its {padded:.2f}x padded tiles = {visited * padded:.1%} of the dense "
          f"work; two threads, best of {repeats}: dense {min(times['dense']):.3f} s, pruned {min(times['pruned']):.3f} s "
          "(identical codes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("signal", help="signal file (e.g. demo.fast5)")
    parser.add_argument("tokenizers", nargs="+")
    parser.add_argument("--max-samples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trust-pickle", action="store_true", help="allow pickled upstream centroids")
    args = parser.parse_args()
    for spec in args.tokenizers:
        x, codebook = search_inputs(spec, args.signal, args.max_samples, args.trust_pickle)
        report(spec, x, np.ascontiguousarray(codebook, dtype=np.float32), args.repeats)


if __name__ == "__main__":
    main()
