"""``nst-hf inspect``: what is in a signal file (or directory)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="show reads, sampling rates and lengths of signal files",
                                   description="Show the reads of FAST5/POD5/SLOW5/BLOW5 files or directories.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="signal files or directories")
    parser.add_argument("--reads", action="store_true", help="list every read, not only the per-file summary")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def summarize_files(inputs) -> list[dict]:
    """Per-file summary: reads, samples, sampling rates, length statistics and skipped reads."""
    import numpy as np

    import nst_hf
    from nst_hf.io import find_signal_files

    summaries = []
    for path in find_signal_files(inputs):
        with nst_hf.open_reads(path, on_error="skip") as source:
            reads = [{"read_id": r.read_id, "samples": r.num_samples, "sampling_rate": r.sampling_rate,
                      "calibrated": r.has_calibration, "channel": r.channel, "end_reason": r.end_reason}
                     for r in source]
        lengths = np.array([r["samples"] for r in reads] or [0])
        summaries.append({
            "file": str(path), "reads": len(reads), "samples": int(lengths.sum()) if reads else 0,
            "sampling_rates": sorted({r["sampling_rate"] for r in reads if r["sampling_rate"]}),
            "length_min_median_max": [int(lengths.min()), float(np.median(lengths)), int(lengths.max())],
            "uncalibrated_reads": sum(not r["calibrated"] for r in reads),
            "skipped": [s.to_dict() for s in source.skipped], "read_list": reads,
        })
    return summaries


def run(args) -> int:
    summaries = summarize_files(args.inputs)
    if args.json:
        for summary in summaries:
            if not args.reads:
                summary.pop("read_list")
        print(json.dumps(summaries, indent=2))
        return 0
    for summary in summaries:
        low, mid, high = summary["length_min_median_max"]
        rates = ", ".join(f"{r:g}" for r in summary["sampling_rates"]) or "unknown"
        print(f"{summary['file']}: {summary['reads']} reads, {summary['samples']:,} samples, "
              f"sampling rate {rates} Hz, length min/median/max {low:,}/{mid:,.0f}/{high:,}")
        if summary["uncalibrated_reads"]:
            print(f"  {summary['uncalibrated_reads']} reads without calibration (raw signal only)")
        for skipped in summary["skipped"]:
            print(f"  skipped {skipped['read_id'] or 'file'}: {skipped['reason']}")
        if args.reads:
            for read in summary["read_list"]:
                print(f"  {read['read_id']}\t{read['samples']}\t{read['sampling_rate']}\t{read['end_reason']}")
    return 0
