"""``nst-hf inspect``: what is in a signal file (or directory)."""

from __future__ import annotations

import json

from nst_hf.cli._source import add_source_options, source_kwargs


def register(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="show what is in signal files, or describe a tokenizer",
                                   description="Show the reads of FAST5/POD5/SLOW5/BLOW5 files or directories, or a "
                                               "tokenizer's kind, codebook, frame rate and preprocessing (a saved "
                                               "folder, a Hub repo id, 'default', or an upstream .pth/.npy/.npz file).")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="signal files/directories, or one tokenizer")
    add_source_options(parser)
    parser.add_argument("--reads", action="store_true", help="list every read, not only the per-file summary")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def summarize_files(inputs) -> list[dict]:
    """Per-file summary: reads, samples, sampling rates, length statistics and skipped reads."""
    import numpy as np

    from nst_hf.io import open_reads
    from nst_hf.io import find_signal_files

    summaries = []
    for path in find_signal_files(inputs):
        with open_reads(path, on_error="skip") as source:
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


def _is_tokenizer(value: str) -> bool:
    from pathlib import Path

    from nst_hf.io import SUFFIXES
    from nst_hf.pretrained import BUILTIN

    path = Path(value)
    if value in BUILTIN or (path.is_dir() and (path / "tokenizer_config.json").exists()):
        return True
    if path.is_file():
        return path.suffix in (".pth", ".pt", ".ckpt", ".bin", ".npy", ".npz")
    return not path.exists() and path.suffix.lower() not in SUFFIXES and value.count("/") == 1  # a Hub repo id


def describe_tokenizer(spec: str, **load_kwargs) -> dict:
    """Kind, class, codebook, vocabulary, frame rate and preprocessing of a tokenizer."""
    from nst_hf.auto import load_tokenizer

    tok = load_tokenizer(spec, **load_kwargs)
    facts = tok.card_facts()
    return {"tokenizer": spec, "class": type(tok).__name__, "vocab_size_with_special_tokens": len(tok),
            "special_tokens": tok.all_special_tokens, **facts}


def run(args) -> int:
    if len(args.inputs) == 1 and _is_tokenizer(args.inputs[0]):
        info = describe_tokenizer(args.inputs[0], **source_kwargs(args))
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        rate = f"{info['sampling_rate']:g} Hz" if info["sampling_rate"] else "not recorded"
        frames = f"{info['frame_rate']:g} tokens/s per level" if info["frame_rate"] else "n/a"
        print(f"{info['tokenizer']}: {info['class']} ({info['kind']})\n"
              f"  architecture: {info.get('architecture', 'n/a')}\n"
              f"  codebook: {info['codebook_size']} codes x {info['num_quantizers']} level(s); vocabulary "
              f"{info['vocab_size_with_special_tokens']} with {', '.join(info['special_tokens'])}\n"
              f"  {info['samples_per_token']} samples per token; sampling rate {rate}; frame rate {frames}\n"
              f"  preprocessing: " + ", ".join(f"{k}={v}" for k, v in info["preprocessing"].items()))
        return 0
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
