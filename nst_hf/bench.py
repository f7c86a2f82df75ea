"""Benchmark helpers: throughput and peak memory of reading and preprocessing, one case per child process.

Each case runs in a fresh spawned process so that its peak resident memory (``ru_maxrss``) is its
own; ``tracemalloc`` adds the peak of Python/NumPy allocations, which shows whether memory is
bounded by one read or grows with the input.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(function: Callable[[], int], min_seconds: float) -> tuple[float, int, int]:
    """Run ``function`` (returns samples processed) until ``min_seconds`` passed; (seconds, samples, passes)."""
    start = time.perf_counter()
    samples = passes = 0
    while True:
        samples += function()
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed, samples, passes


def _read_case(paths: list[str], min_seconds: float) -> dict:
    from nst_hf.io import open_reads

    def run() -> int:
        total = 0
        with open_reads(paths, on_error="skip") as source:
            for record in source:
                if record.has_calibration:
                    record.signal_pa
                total += record.num_samples
        return total

    rss_before = _rss_mib()
    run()  # warm caches and lazy imports
    tracemalloc.start()
    seconds, samples, passes = _timed(run, min_seconds)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"samples": samples // passes, "samples_per_s": samples / seconds, "passes": passes,
            "traced_peak_mib": traced_peak / 2**20, "rss_peak_mib": _rss_mib(), "rss_base_mib": rss_before}


def _preprocess_case(paths: list[str], min_seconds: float, max_samples: int) -> dict:
    from nst_hf.io import open_reads
    from nst_hf import preprocessing as pp

    signals, rates = [], []
    total = 0
    with open_reads(paths, on_error="skip") as source:
        for record in source:
            if not record.has_calibration or record.num_samples < 100:
                continue
            signals.append(record.signal_pa)
            rates.append(record.sampling_rate or 4000.0)
            total += record.num_samples
            if total >= max_samples:
                break
    normalized = [pp.normalize(s) for s in signals]
    steps = {
        "normalize (med/MAD)": lambda: sum(pp.normalize(s).size for s in signals),
        "median filter k=5": lambda: sum(pp.median_filter(s, 5).size for s in normalized),
        "low-pass 1 kHz order 6": lambda: sum(pp.lowpass_filter(s, 1000.0, r).size for s, r in zip(normalized, rates)),
        "K-Means chain": lambda: sum(pp.kmeans_chain(s).size for s in signals),
    }
    results = {}
    for name, step in steps.items():
        seconds, samples, _ = _timed(step, min_seconds)
        results[name] = samples / seconds
    return {"samples": total, "steps": results}


@contextlib.contextmanager
def _environment(env: dict[str, str] | None):
    """Set ``env`` in this process's environment for the duration (a spawned child inherits it at start)."""
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_isolated(function: Callable, *args, env: dict[str, str] | None = None) -> dict:
    """Run ``function(*args)`` in a fresh spawned process (with ``env`` added to its environment), return its result."""
    from concurrent.futures import ProcessPoolExecutor

    from nst_hf._allocator import keep_freed_memory

    # not multiprocessing.Pool: it waits forever for a task whose worker died; this raises instead
    with _environment(env), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=keep_freed_memory) as pool:  # as a pipeline run tokenizes
        return pool.submit(function, *args).result()


def bench_read(paths: list[str | Path], min_seconds: float = 1.0, max_preprocess_samples: int = 2_000_000) -> dict:
    """Reading+calibration per input and all inputs together, plus each preprocessing step.

    Returns ``{"read": [{"input", "format", "samples_per_s", ...}], "preprocess": {...}}``.
    """
    from nst_hf.io import find_signal_files

    files = [str(p) for p in find_signal_files(paths)]
    by_format: dict[str, list[str]] = {}
    for file in files:
        by_format.setdefault(Path(file).suffix.lower(), []).append(file)
    cases = [(Path(f).name, Path(f).suffix.lower(), [f]) for f in files] if len(files) <= 8 else []
    cases += [(f"all {fmt} ({len(group)} files)", fmt, group) for fmt, group in sorted(by_format.items())]
    if len(files) > 1:
        cases.append((f"all inputs ({len(files)} files)", "mixed", files))
    rows = []
    for label, fmt, group in cases:
        result = run_isolated(_read_case, group, min_seconds)
        rows.append({"input": label, "format": fmt, **result})
    preprocess = run_isolated(_preprocess_case, files, min_seconds, max_preprocess_samples)
    return {"read": rows, "preprocess": preprocess}


def format_read_report(report: dict) -> str:
    """Human-readable table of :func:`bench_read` output."""
    lines = [f"{'input':<44} {'samples':>11} {'Msamples/s':>11} {'traced peak MiB':>16} {'RSS peak MiB':>13}"]
    for row in report["read"]:
        lines.append(f"{row['input'][:44]:<44} {row['samples']:>11,} {row['samples_per_s'] / 1e6:>11.1f} "
                     f"{row['traced_peak_mib']:>16.1f} {row['rss_peak_mib']:>13.0f}")
    pre = report["preprocess"]
    lines.append("")
    lines.append(f"preprocessing on {pre['samples']:,} samples of these reads")
    for name, rate in pre["steps"].items():
        lines.append(f"  {name:<28} {rate / 1e6:>8.2f} Msamples/s")
    return "\n".join(lines)


def peak_matmul_gflops(size: int = 2048, seconds: float = 1.0, device: str = "cpu", repeats: int = 5) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) on ``size``² products with torch (the search's library).

    The best of ``repeats`` timings of ``seconds / repeats`` each: a peak is what the machine can do, and
    on a shared machine a single timing is often lowered by other load.
    """
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)

    def run() -> int:
        torch.mm(a, b, out=out)
        if device != "cpu":
            torch.cuda.synchronize()
        return 1

    best = 0.0
    for _ in range(repeats):
        elapsed, count, _ = _timed(run, seconds / repeats)
        best = max(best, 2 * size**3 * count / elapsed / 1e9)
    return best


#: Environment that holds torch's CPU GEMM libraries (MKL, oneDNN) to 8-wide AVX2 code; read when they start,
#: so it is given to a fresh process (:func:`run_isolated`'s ``env``).
AVX2_GEMM_ENV = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def limit_isa(kernel: str | None) -> str:
    """Which fp32 peak a CPU row of the fused ``kernel`` path is held against: ``"cpu-avx2"`` for the AVX2 path,
    else ``"cpu"``.

    The AVX2 path does 8-wide FMAs, so on an AVX-512 CPU its own limit is torch's 2048² GEMM with MKL and oneDNN
    held to AVX2 (:data:`AVX2_GEMM_ENV`) -- the best 8-wide FMA rate a tuned GEMM reaches, measured exactly as
    the default limit is, so that the two fractions compare. A bare FMA loop (:func:`fma_peak_gflops`) is not
    the limit: no product with loads reaches it, and holding only one ISA to it would make the fractions
    incomparable; the bench prints it beside the limits to show how the CPU's 16- and 8-wide rates relate
    (on AMD Zen 4, whose AVX-512 splits each 512-bit FMA into two 256-bit halves, they are equal).
    """
    return "cpu-avx2" if kernel == "avx2" else "cpu"


def fma_peak_gflops(width: int, seconds: float = 0.5, threads: int | None = None, repeats: int = 3) -> float:
    """Best rate (GFLOP/s, all ``threads`` together) of the kernel's ``width``-lane FMA probe: 12 independent
    register chains, no memory traffic -- the CPU's FMA throughput at that width (8: AVX2+FMA, 16: AVX-512F).

    Raises ``ValueError`` if the CPU or build has no FMA of that width, ``RuntimeError`` without the kernel.
    """
    from nst_hf._threads import compute_threads
    from nst_hf.quantizers import fused

    if fused._fused_search is None:
        raise RuntimeError("the FMA probe is part of the fused search kernel, which is not built")
    probe = fused._fused_search.fma_flops
    threads = threads or compute_threads()
    iterations = 1_000_000
    started = time.perf_counter()
    probe(width, iterations)
    iterations = max(1000, int(iterations * seconds / repeats / max(time.perf_counter() - started, 1e-6)))
    best = 0.0
    for _ in range(repeats):
        flops = [0.0] * threads

        def work(slot: int) -> None:
            flops[slot] = probe(width, iterations)

        workers = [threading.Thread(target=work, args=(slot,)) for slot in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = max(best, sum(flops) / (time.perf_counter() - started) / 1e9)
    return best


def _peaks(devices: list[str], isas: set[str]) -> dict[str, float]:
    """The fp32 GEMM peak of each device, and of ``"cpu-avx2"`` (torch held to AVX2) when asked for."""
    peaks = {device: run_isolated(peak_matmul_gflops, 2048, 1.0, device) for device in devices}
    if "cpu-avx2" in isas:
        peaks["cpu-avx2"] = run_isolated(peak_matmul_gflops, 2048, 1.0, "cpu", env=AVX2_GEMM_ENV)
    return peaks


def _tokenize_case(spec: str, load_kwargs: dict, paths: list[str], min_seconds: float, device: str,
                   token_type: str | None, max_samples: int, resample: bool = False) -> dict:
    import torch

    from nst_hf.quantizers import fused

    from nst_hf.io import open_reads
    from nst_hf.auto import load_tokenizer

    tok = load_tokenizer(spec, **load_kwargs)
    if device != "cpu" and hasattr(tok, "to"):
        tok.to(device)
    signals, rates = _bench_signals(tok, paths, max_samples, resample)
    total = sum(signal.size for signal in signals)

    def in_memory() -> int:
        tok.encode_signals_to_codes(signals, rates, token_type=token_type)
        if device != "cpu":
            torch.cuda.synchronize()
        return total

    def with_reading() -> int:
        count = 0
        with open_reads(paths, on_error="skip") as source:
            for record, codes, _ in tok.iter_tokenized(source, token_type=token_type, on_error="skip",
                                                       resample=resample):
                count += record.num_samples
        return count

    in_memory()  # warm-up
    if device == "cpu":  # timing the stages costs two clock reads each: the rate and its stages, same passes
        seconds, samples, stages = _timed_stages(tok, in_memory, min_seconds)
    else:  # each stage waits for the device, which would slow the call itself: the stages in passes of their own
        seconds, samples, _ = _timed(in_memory, min_seconds)
        stages = _timed_stages(tok, in_memory, min_seconds)[2]
    read_seconds, read_samples, _ = _timed(with_reading, min_seconds)
    flops = tok.flops_per_sample(token_type)
    kernel = fused.kernel_name() if device == "cpu" and fused.available() else None
    return {"tokenizer": spec, "kind": tok.bwav_kind, "device": device, "kernel": kernel, "samples": total,
            "samples_per_s": samples / seconds, "samples_per_s_with_reading": read_samples / read_seconds,
            "stage_samples_per_s": stages, "flops_per_sample": flops, "rss_peak_mib": _rss_mib()}


def _bench_signals(tok, paths: list[str], max_samples: int, resample: bool) -> tuple[list, list]:
    """pA signals of the first reads (up to ``max_samples`` samples, as read), resampled to the tokenizer's
    rate here, before any timing, when ``resample`` is set; and their rates."""
    from nst_hf.io import open_reads
    from nst_hf.preprocessing import resample_signal

    signals, rates, total = [], [], 0
    with open_reads(paths, on_error="skip") as source:
        for record in source:
            if record.has_calibration:
                signals.append(record.signal_pa)
                rates.append(record.sampling_rate)
                total += record.num_samples
            if total >= max_samples:
                break
    target = tok.sampling_rate
    if resample and target:
        signals = [s if r in (None, target) else resample_signal(s, r, target) for s, r in zip(signals, rates)]
        rates = [target if r is not None else None for r in rates]
    return signals, rates


def _timed_stages(tok, run: Callable[[], int], min_seconds: float) -> tuple[float, int, dict[str, float]]:
    """Passes of ``run`` lasting ``min_seconds`` with the tokenizer's stage timing on: (seconds, samples, the
    samples/s of each stage it times: ``encoder``, ``search``; ``other`` is the rest of the call:
    preprocessing, windowing, writing codes). The stages' seconds add up to ``seconds``."""
    tok.stage_seconds = {}
    try:
        seconds, samples, _ = _timed(run, min_seconds)
        stages = dict(tok.stage_seconds)
    finally:
        tok.stage_seconds = None
    stages["other"] = max(seconds - sum(stages.values()), 1e-12)
    return seconds, samples, {name: samples / spent for name, spent in stages.items() if spent > 0}


def bench_tokenize(specs: list[str], paths: list, min_seconds: float = 2.0, devices: list[str] | None = None,
                   token_type: str | None = None, load_kwargs: dict | None = None,
                   max_samples: int = 2_000_000, resample: bool = False, kernels: list[str] | None = None,
                   runs: int = 1) -> dict:
    """Tokenizer throughput against this machine's fp32 matmul peak, one child process per case.

    ``kernels``: fused-search paths to measure on CPU, each case in a child with ``NST_HF_FUSED_KERNEL`` set
    (default: the path this CPU picks); each row is held against the peak of its path's width
    (:func:`limit_isa`). ``runs`` repeats everything, peaks included, so that each run's fractions use that
    run's own peaks (see :func:`summarize_runs`).
    """
    import torch

    from nst_hf.io import find_signal_files

    files = [str(p) for p in find_signal_files(paths)]
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    isas = {limit_isa(kernel) for kernel in kernels or [None]}
    fma = {}
    for width in (8, 16):
        try:
            fma[str(width)] = run_isolated(fma_peak_gflops, width)
        except (ValueError, RuntimeError):  # no FMA of that width on this CPU, or no kernel built
            pass
    rows, all_peaks = [], []
    for run in range(int(runs)):
        peaks = _peaks(devices, isas)
        run_rows = []
        for spec in specs:
            for device in devices:
                for kernel in (kernels or [None]) if device == "cpu" else [None]:
                    env = {"NST_HF_FUSED_KERNEL": kernel} if kernel else None
                    row = run_isolated(_tokenize_case, spec, load_kwargs or {}, files, min_seconds, device, token_type,
                                       max_samples, resample, env=env)
                    row["run"] = run
                    row["limit"] = limit_isa(row["kernel"]) if device == "cpu" else device
                    run_rows.append(row)
        isas |= {row["limit"] for row in run_rows if row["device"] == "cpu"}  # "cpu-avx2" where the CPU picks
        for name, again in _peaks(devices, isas).items():  # the AVX2 path by itself; again after the cases:
            peaks[name] = max(peaks.get(name, 0.0), again)  # the higher is the peak
        for row in run_rows:
            flops = sum(row["flops_per_sample"].values())
            row["peak_gflops"] = peaks[row["limit"]]
            row["limit_samples_per_s"] = peaks[row["limit"]] * 1e9 / flops
            row["fraction_of_limit"] = row["samples_per_s"] / row["limit_samples_per_s"]
            row["stage_fraction_of_limit"] = {  # each stage's own FLOPs at the same peak
                name: rate * row["flops_per_sample"][name] / (row["peak_gflops"] * 1e9)
                for name, rate in row["stage_samples_per_s"].items() if row["flops_per_sample"].get(name)}
        rows += run_rows
        all_peaks.append(peaks)
    return {"peak_gflops": {name: max(p[name] for p in all_peaks) for name in all_peaks[0]},
            "peaks_per_run": all_peaks, "fma_peak_gflops": fma, "runs": int(runs), "rows": rows}


def summarize_runs(report: dict) -> list[dict]:
    """Per tokenizer, device and kernel over the runs: median, min and max of samples/s and of the fraction."""
    groups: dict[tuple, list[dict]] = {}
    for row in report["rows"]:
        groups.setdefault((row["tokenizer"], row["device"], row["kernel"]), []).append(row)
    out = []
    for (spec, device, kernel), group in groups.items():
        rates = np.array([r["samples_per_s"] for r in group])
        fractions = np.array([r["fraction_of_limit"] for r in group])
        out.append({"tokenizer": spec, "device": device, "kernel": kernel, "limit": group[0]["limit"],
                    "runs": len(group), "samples_per_s": [float(np.median(rates)), float(rates.min()), float(rates.max())],
                    "fraction_of_limit": [float(np.median(fractions)), float(fractions.min()), float(fractions.max())]})
    return out


def format_tokenize_report(report: dict) -> str:
    peaks = ", ".join(f"{name} {g:.0f} GFLOP/s" for name, g in report["peak_gflops"].items())
    lines = ["fp32 matmul peak (torch, 2048², best timing before and after the cases; cpu-avx2: MKL/oneDNN held "
             f"to AVX2): {peaks}"]
    if report.get("fma_peak_gflops"):
        lines.append("FMA probe (registers only, all threads): " + ", ".join(
            f"{width}-wide {g:.0f} GFLOP/s" for width, g in report["fma_peak_gflops"].items()))
    lines.append(f"{'tokenizer':<30} {'dev':<4} {'kernel':<7} {'run':>3} {'ksamples/s':>10} {'+reading':>9} "
                 f"{'kFLOP/sample':>12} {'limit':<8} {'limit ks/s':>10} {'of limit':>8} {'RSS MiB':>7}")
    for row in report["rows"]:
        flops = sum(row["flops_per_sample"].values())
        lines.append(f"{Path(row['tokenizer']).name[:30]:<30} {row['device']:<4} {row.get('kernel') or '-':<7} "
                     f"{row.get('run', 0):>3} {row['samples_per_s'] / 1e3:>10.1f} "
                     f"{row['samples_per_s_with_reading'] / 1e3:>9.1f} {flops / 1e3:>12.1f} {row.get('limit', ''):<8} "
                     f"{row['limit_samples_per_s'] / 1e3:>10.1f} {row['fraction_of_limit']:>8.2f} {row['rss_peak_mib']:>7.0f}")
        for name, rate in row.get("stage_samples_per_s", {}).items():
            stage_flops = row["flops_per_sample"].get(name, 0.0)
            fraction = row["stage_fraction_of_limit"].get(name)
            limit = f"{'':<8} {row['peak_gflops'] * 1e6 / stage_flops:>10.1f} {fraction:>8.2f}" if stage_flops else ""
            lines.append(f"{'  ' + name:<30} {'':<4} {'':<7} {'':>3} {rate / 1e3:>10.1f} {'':>9} "
                         f"{stage_flops / 1e3:>12.1f} {limit}".rstrip())
    lines.append("stage rows: that stage alone (samples/s over its own time), its FLOPs, its limit and fraction at the "
                 "same peak")
    if report.get("runs", 1) > 1:
        lines.append("")
        lines.append(f"over {report['runs']} runs (each fraction against its own run's peak): median [min–max]")
        for s in summarize_runs(report):
            rate, frac = s["samples_per_s"], s["fraction_of_limit"]
            lines.append(f"{Path(s['tokenizer']).name[:30]:<30} {s['device']:<4} {s['kernel'] or '-':<7} "
                         f"{rate[0] / 1e3:8.1f} [{rate[1] / 1e3:.1f}–{rate[2] / 1e3:.1f}] ksamples/s   "
                         f"{frac[0]:.2f} [{frac[1]:.2f}–{frac[2]:.2f}] of the {s['limit']} limit")
    return "\n".join(lines)


#: Stages a pipeline row breaks its seconds into (``stage_seconds`` keys), then "other" for the rest.
PIPELINE_STAGES = ("read", "preprocess", "encoder", "search", "write")


def _quiet_skips() -> None:
    """Silence the per-read 'skipping read' warnings in a bench process: the report counts the skips."""
    import logging

    logging.getLogger("nst_hf").setLevel(logging.ERROR)


#: How a pipeline case starts: ``"run"`` as ``nst-hf tokenize`` does (the readers' start-up begins before
#: torch and transformers are imported, as ``cli/_early.begin_readers`` does, and the run loads the
#: tokenizer, whose time is not counted), ``"loaded"`` with the tokenizer loaded before the run (an API
#: caller's first run in a process: the readers' start-up begins with the run and is all counted).
PIPELINE_STARTS = ("run", "loaded")


def _pipeline_case(spec: str, load_kwargs: dict, paths: list[str], workdir: str, token_type: str | None,
                   resample: bool = False, prefetch: bool = True, start: str = "run") -> dict:
    import os
    import sys

    readers_before_imports = False
    if start == "run":  # as the command begins them (cli/_early.begin_readers, for a fresh run in one process):
        import threading  # before its heavy imports, which this child has not made yet

        from nst_hf.io import find_signal_files, prepare_readers

        before = "torch" not in sys.modules
        prepare_readers(find_signal_files(paths))
        readers_before_imports = before and any(thread.name == "nst_hf-reader-imports"
                                                for thread in threading.enumerate())  # under way (~0.5 s for pod5)

    from nst_hf.auto import load_tokenizer
    from nst_hf.pipeline import tokenize_inputs
    from nst_hf.tokenizers.base import NstBaseTokenizer

    _quiet_skips()
    os.environ["NST_HF_PREFETCH"] = "1" if prefetch else "0"
    rss_base = _rss_mib()
    stages: dict[str, float] = {}
    if start == "loaded":
        tok = load_tokenizer(spec, **load_kwargs)
        rss_base = _rss_mib()
        tok.stage_seconds = stages
    else:  # this process holds one tokenizer: the class default reaches the one the run loads
        NstBaseTokenizer.stage_seconds = stages
        tok = spec
    summary = tokenize_inputs(paths, Path(workdir) / "bench_output.jsonl", tokenizer=tok, token_type=token_type,
                              on_error="skip", progress=False, resample=resample, overwrite=True,
                              load_kwargs=load_kwargs)
    seconds = summary.seconds - summary.load_seconds
    return {"samples": summary.samples, "reads": summary.reads, "skipped": len(summary.skipped),
            "seconds": seconds, "samples_per_s": summary.samples / seconds, "rss_peak_mib": _rss_mib(),
            "rss_base_mib": rss_base, "stage_seconds": dict(stages), "prefetch": prefetch, "start": start,
            "load_seconds": summary.load_seconds, "readers_before_imports": readers_before_imports}


def _alone_case(spec: str, load_kwargs: dict, paths: list[str], token_type: str | None, resample: bool) -> dict:
    """The pipeline's work without files: the same reads held in memory (raw int16 and calibration), then
    calibration, preprocessing (resampling included), encoding and search, counted in raw samples as the
    pipeline counts them."""
    from nst_hf.auto import load_tokenizer
    from nst_hf.io import open_reads

    _quiet_skips()
    tok = load_tokenizer(spec, **load_kwargs)
    with open_reads(paths, on_error="skip") as source:
        records = list(source)

    def run(batch) -> int:
        samples = 0
        for record, codes, _ in tok.iter_tokenized(batch, token_type, on_error="skip", resample=resample,
                                                   prefetch=False):
            samples += record.num_samples if codes is not None and codes.size else 0
        return samples

    run(records[:4])  # warm-up
    tok.stage_seconds = {}
    started = time.perf_counter()
    samples = run(records)
    seconds = time.perf_counter() - started
    return {"samples": samples, "seconds": seconds, "samples_per_s": samples / seconds,
            "stage_seconds": dict(tok.stage_seconds)}


def bench_pipeline(spec: str, paths: list, token_type: str | None = None, load_kwargs: dict | None = None,
                   min_seconds: float = 2.0, resample: bool = False, runs: int = 1) -> dict:
    """End-to-end read → tokens → written samples/s on a small and the full input, with and without reading
    ahead and started both ways (:data:`PIPELINE_STARTS`), against the tokenizer alone on the same reads held
    in memory (each in a fresh process, the alone case just before the pipeline cases of the same run); a
    single file is the full input only.
    Each row also has the seconds per stage
    (:data:`PIPELINE_STAGES`; the rest is start-up: finding and checking files, the lock, manifest, parts
    and the output). ``runs > 1`` repeats everything, so that :func:`summarize_pipeline_runs` gives the
    spread of each ratio."""
    import tempfile

    from nst_hf.io import find_signal_files

    files = [str(p) for p in find_signal_files(paths)]
    small = files[:max(1, len(files) // 4)]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for run in range(runs):
            inputs = [(f"small ({len(small)} files)", small), (f"full ({len(files)} files)", files)]
            for label, group in inputs[1:] if len(small) == len(files) else inputs:  # one file: one input
                alone = run_isolated(_alone_case, spec, load_kwargs or {}, group, token_type, resample)
                for prefetch, start in ((True, "run"), (False, "run"), (False, "loaded")):
                    row = run_isolated(_pipeline_case, spec, load_kwargs or {}, group, workdir, token_type,
                                       resample, prefetch, start)
                    row.update(run=run, input=label, alone_samples_per_s=alone["samples_per_s"],
                               alone_seconds=alone["seconds"], alone_stage_seconds=alone["stage_seconds"],
                               ratio_to_tokenizer_alone=row["samples_per_s"] / alone["samples_per_s"])
                    rows.append(row)
    return {"tokenizer": spec, "runs": runs, "rows": rows}


def summarize_pipeline_runs(report: dict) -> list[dict]:
    """Per (input, reading ahead, start): the median, min and max ratio to the tokenizer alone over the runs."""
    groups: dict[tuple, list[float]] = {}
    for row in report["rows"]:
        key = (row["input"], row["prefetch"], row.get("start", "run"))
        groups.setdefault(key, []).append(row["ratio_to_tokenizer_alone"])
    return [{"input": label, "prefetch": prefetch, "start": start, "ratio": (float(np.median(r)), min(r), max(r)),
             "runs": len(r)} for (label, prefetch, start), r in groups.items()]


def _other_seconds(seconds: float, stages: dict) -> float:
    return seconds - sum(stages.get(name, 0.0) for name in PIPELINE_STAGES)


def format_pipeline_report(report: dict) -> str:
    stage_heads = " ".join(f"{name:>7}" for name in PIPELINE_STAGES)
    lines = [f"tokenizer {report['tokenizer']}; alone = the same reads in memory, same preprocessing, no files; "
             "seconds per stage",
             f"{'input':<18} {'ahead':<5} {'start':<6} {'samples':>12} {'ksamples/s':>11} {'alone':>9} {'of alone':>8}  "
             f"{stage_heads} {'other':>7} {'total':>7} {'RSS MiB':>8}"]
    for row in report["rows"]:
        stages, alone = row.get("stage_seconds", {}), row.get("alone_stage_seconds", {})
        figures = " ".join(f"{stages.get(name, 0.0):>7.2f}" for name in PIPELINE_STAGES)
        alone_figures = " ".join(f"{alone.get(name, 0.0):>7.2f}" for name in PIPELINE_STAGES)
        alone_seconds = row.get("alone_seconds", row["samples"] / row["alone_samples_per_s"])
        lines.append(f"{row['input']:<18} {'yes' if row.get('prefetch') else 'no':<5} {row.get('start', 'run'):<6} "
                     f"{row['samples']:>12,} "
                     f"{row['samples_per_s'] / 1e3:>11.1f} {row['alone_samples_per_s'] / 1e3:>9.1f} "
                     f"{row['ratio_to_tokenizer_alone']:>8.2f}  {figures} "
                     f"{_other_seconds(row['seconds'], stages):>7.2f} {row['seconds']:>7.2f} "
                     f"{row['rss_peak_mib']:>8.0f}")
        lines.append(f"{'  alone':<18} {'':<5} {'':<6} {'':>12} {'':>11} {'':>9} {'':>8}  {alone_figures} "
                     f"{_other_seconds(alone_seconds, alone):>7.2f} {alone_seconds:>7.2f}")
    skipped = {row["input"]: row.get("skipped", 0) for row in report["rows"]}
    lines.append("read: getting records from the files (imports of reader libraries included); write: token text "
                 "and output rows; other: start-up, lock, manifest, parts, output; with reading ahead, read and "
                 "preprocess run beside the encoder and overlap it")
    lines.append("start run: as `nst-hf tokenize` runs, the readers' start-up (SLOW5 probe helper, h5py and pod5 "
                 "imports) begins before torch and transformers are imported and runs beside those imports and the "
                 "tokenizer load, whose time is not counted (as the alone case does not count it); start loaded: "
                 "the tokenizer was loaded before the run, so all of that start-up is counted")
    lines.append("reads skipped (listed in each run's report): "
                 + ", ".join(f"{label} {count}" for label, count in skipped.items()))
    if report.get("runs", 1) > 1:
        lines.append("")
        lines.append(f"over {report['runs']} runs (each against its own run's alone case): median [min–max]")
        for s in summarize_pipeline_runs(report):
            ratio = s["ratio"]
            lines.append(f"{s['input']:<18} {'yes' if s['prefetch'] else 'no':<5} {s['start']:<6} "
                         f"{ratio[0]:.2f} [{ratio[1]:.2f}–{ratio[2]:.2f}] of the tokenizer alone")
    return "\n".join(lines)


# ---------------------------------------------------------------------- long reads

def long_squiggle(num_samples: int, seed: int = 0) -> np.ndarray:
    """A synthetic pA signal of ``num_samples`` samples: piecewise-constant levels (dwells of ~10 samples)
    plus noise, made in blocks so that building it needs little more memory than the signal."""
    rng = np.random.default_rng(seed)
    out = np.empty(num_samples, dtype=np.float32)
    block = 1 << 20
    for start in range(0, num_samples, block):
        size = min(block, num_samples - start)
        levels = rng.normal(90.0, 12.0, size // 10 + 1).astype(np.float32)
        out[start:start + size] = np.repeat(levels, 10)[:size] + rng.normal(0.0, 2.0, size).astype(np.float32)
    return out


def _long_read_case(spec: str, num_samples: int) -> dict:
    from nst_hf.auto import load_tokenizer

    tok = load_tokenizer(spec)
    tok.encode_signals_to_codes([long_squiggle(50_000)], [tok.sampling_rate])  # warm-up: weights, threads
    signal = long_squiggle(num_samples)
    before = _rss_mib()
    started = time.perf_counter()
    (codes,) = tok.encode_signals_to_codes([signal], [tok.sampling_rate])
    seconds = time.perf_counter() - started
    peak = _rss_mib()
    return {"samples": num_samples, "tokens": int(codes.shape[0]), "seconds": seconds,
            "samples_per_s": num_samples / seconds, "signal_mib": signal.nbytes / 2**20,
            "peak_rss_mib": peak, "rss_above_signal_mib": peak - before,
            "bytes_per_sample_above_signal": (peak - before) * 2**20 / num_samples}


def bench_long_reads(spec: str = "default", sizes: tuple[int, ...] = (5_000_000, 20_000_000, 50_000_000)) -> dict:
    """Time and peak memory of tokenizing one read of each size, each in a fresh process."""
    return {"tokenizer": spec, "rows": [run_isolated(_long_read_case, spec, int(size)) for size in sizes]}


def format_long_reads_report(report: dict) -> str:
    lines = [f"tokenizer {report['tokenizer']}: one read per row, each in a fresh process",
             f"{'samples':>12} {'tokens':>11} {'seconds':>8} {'samples/s':>11} {'signal MiB':>10} "
             f"{'peak RSS MiB':>12} {'B/sample above signal':>22}"]
    for row in report["rows"]:
        lines.append(f"{row['samples']:>12,} {row['tokens']:>11,} {row['seconds']:>8.1f} {row['samples_per_s']:>11,.0f} "
                     f"{row['signal_mib']:>10.0f} {row['peak_rss_mib']:>12.0f} {row['bytes_per_sample_above_signal']:>22.1f}")
    return "\n".join(lines)
