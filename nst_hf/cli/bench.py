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


def run_read(args) -> int:
    from nst_hf.bench import bench_read, format_read_report

    report = bench_read(args.inputs, min_seconds=args.seconds)
    print(json.dumps(report, indent=2) if args.json else format_read_report(report))
    return 0
