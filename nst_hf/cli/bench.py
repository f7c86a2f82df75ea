"""``nst-hf bench``: throughput and peak-memory figures to compare side by side in one run."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="print throughput and peak-memory figures",
                                   description="Benchmarks print figures; they assert nothing.")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH")
    benches.required = True
    read = benches.add_parser("read", help="reading + calibration and each preprocessing step",
                              description="Samples/s and peak memory of reading each input (each format, and all "
                                          "inputs together) and of each preprocessing step.")
    read.add_argument("inputs", nargs="+", metavar="INPUT", help="signal files or directories")
    read.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per measurement (default 1)")
    read.add_argument("--json", action="store_true", help="print JSON")
    read.set_defaults(func=run_read)
    tok = benches.add_parser("tokenize", help="tokenizer samples/s against this machine's fp32 matmul limit",
                             description="Samples/s (reading excluded and included), FLOPs per sample, the fp32 "
                                         "matmul peak measured in the same run, the fraction of the limit and peak "
                                         "memory, then the same for the encoder and the nearest-code search alone "
                                         "(and 'other': preprocessing, windowing); on CUDA too when a GPU is present.")
    tok.add_argument("inputs", nargs="+", metavar="INPUT", help="signal files or directories")
    tok.add_argument("--tokenizer", action="append", required=True, metavar="T",
                     help="folder, repo id, 'default' or upstream file; repeat to compare several")
    tok.add_argument("--token-type", default=None, help="RVQ levels to emit (L1..Ln)")
    tok.add_argument("--stride", type=int, default=None, help="K-Means stride for upstream centroids without one")
    tok.add_argument("--trust-pickle", action="store_true", help="allow pickled upstream centroids")
    tok.add_argument("--device", action="append", default=None, choices=["cpu", "cuda"],
                     help="devices to measure (default: cpu, and cuda when available)")
    tok.add_argument("--seconds", type=float, default=2.0, help="minimum seconds per measurement (default 2)")
    tok.add_argument("--max-samples", type=int, default=2_000_000, help="samples held in memory (default 2e6)")
    tok.add_argument("--resample", action="store_true",
                     help="resample reads to the tokenizer's rate before the timing (samples/s then counts "
                          "samples at the tokenizer's rate; the +reading column resamples inside its timing)")
    tok.add_argument("--kernel", action="append", default=None, choices=["avx512", "avx2", "generic"],
                     help="fused-search path to measure on CPU (NST_HF_FUSED_KERNEL in the case's process); repeat "
                          "to compare; the avx2 path is held against torch's GEMM peak with MKL/oneDNN held to AVX2 "
                          "(default: the path this CPU picks)")
    tok.add_argument("--runs", type=int, default=1, help="repeat the whole run (peaks too) and print the spread")
    tok.add_argument("--json", action="store_true", help="print JSON")
    tok.set_defaults(func=run_tokenize)
    pipe = benches.add_parser("pipeline", help="end-to-end read → tokens → written, against the tokenizer alone",
                              description="End-to-end samples/s and peak memory on a small slice and on the whole "
                                          "input, and the ratio to the tokenizer alone on in-memory signals.")
    pipe.add_argument("inputs", nargs="+", metavar="INPUT")
    pipe.add_argument("--tokenizer", default="default")
    pipe.add_argument("--token-type", default=None)
    pipe.add_argument("--stride", type=int, default=None)
    pipe.add_argument("--seconds", type=float, default=2.0)
    pipe.add_argument("--resample", action="store_true", help="resample reads to the tokenizer's rate")
    pipe.add_argument("--runs", type=int, default=1, help="repeat everything and print the spread of the ratios")
    pipe.add_argument("--json", action="store_true")
    pipe.set_defaults(func=run_pipeline)
    long = benches.add_parser("long-reads", help="time and peak memory of single very long reads",
                              description="Tokenizes one synthetic read of each size in a fresh process: time "
                                          "(linear in length?) and peak memory beyond the signal itself.")
    long.add_argument("--tokenizer", default="default")
    long.add_argument("--samples", type=float, nargs="+", default=[5e6, 20e6, 50e6],
                      help="read lengths in samples (default 5e6 20e6 50e6)")
    long.add_argument("--json", action="store_true")
    long.set_defaults(func=run_long_reads)


def run_read(args) -> int:
    from nst_hf.bench import bench_read, format_read_report

    report = bench_read(args.inputs, min_seconds=args.seconds)
    print(json.dumps(report, indent=2) if args.json else format_read_report(report))
    return 0


def run_tokenize(args) -> int:
    from nst_hf.bench import bench_tokenize, format_tokenize_report

    load_kwargs = {}
    if args.stride is not None:
        load_kwargs["stride"] = args.stride
    if args.trust_pickle:
        load_kwargs["trust_pickle"] = True
    if args.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {args.runs}")
    report = bench_tokenize(args.tokenizer, args.inputs, args.seconds, args.device, args.token_type, load_kwargs,
                            args.max_samples, args.resample, args.kernel, args.runs)
    print(json.dumps(report, indent=2) if args.json else format_tokenize_report(report))
    return 0


def run_pipeline(args) -> int:
    from nst_hf.bench import bench_pipeline, format_pipeline_report

    if args.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {args.runs}")
    report = bench_pipeline(args.tokenizer, args.inputs, args.token_type,
                            {"stride": args.stride} if args.stride else {}, args.seconds, args.resample, args.runs)
    print(json.dumps(report, indent=2) if args.json else format_pipeline_report(report))
    return 0


def run_long_reads(args) -> int:
    from nst_hf.bench import bench_long_reads, format_long_reads_report

    report = bench_long_reads(args.tokenizer, tuple(int(n) for n in args.samples))
    print(json.dumps(report, indent=2) if args.json else format_long_reads_report(report))
    return 0
