"""``nst-hf tokenize``: signal files or directories → bwav text (JSONL, Parquet or a datasets folder)."""

from __future__ import annotations

import sys

from nst_hf.cli._early import begin_readers
from nst_hf.cli._source import add_source_options, source_kwargs
from nst_hf.cli._summary import print_skipped


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenize", help="tokenize signal files into bwav text",
        description="Tokenize every read of FAST5/POD5/SLOW5/BLOW5 files or directories. Output rows are "
                    "{id, text}; the output is written atomically and a JSON report (reads, every read not in the "
                    "output with its reason, tokens, samples/s) is written next to it as OUTPUT.report.json. "
                    "An existing output needs --resume (an interrupted run) or --overwrite; the output may not "
                    "lie in an input folder.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="signal files or directories (recursive)")
    parser.add_argument("-o", "--output", required=True, help="output file (.jsonl, .jsonl.gz, .parquet) or folder")
    parser.add_argument("--tokenizer", default="default",
                        help="saved folder, Hub repo id (a saved tokenizer or the earlier tool's checkpoint or centroids), "
                             "upstream .pth/.npy file, or 'default' (the embedded one)")
    parser.add_argument("--token-type", default=None, help="RVQ: emit levels L1..Lk (default L1)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="where the model runs (default cpu)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per model forward pass")
    parser.add_argument("--batch-samples", type=int, default=1_000_000,
                        help="samples of many reads encoded together (default 1e6)")
    parser.add_argument("--workers", type=int, default=1, help="processes, each taking whole files (default 1)")
    parser.add_argument("--format", choices=["jsonl", "parquet", "dataset"], default=None,
                        help="output format (default: from the output name; jsonl otherwise)")
    parser.add_argument("--return-ids", action="store_true", help="also write input_ids")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run (reuses finished files; refused if the tokenizer or "
                             "settings changed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier nst-hf output (only once the new one is complete; never other files)")
    parser.add_argument("--resample", action="store_true",
                        help="resample reads whose sampling rate differs from the tokenizer's (otherwise an error)")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="stop at the first bad read (default) or skip and report it")
    add_source_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    begin_readers(args.inputs, args.resume, args.workers)
    from nst_hf.pipeline import printable_path, tokenize_inputs

    fmt = args.format or ("parquet" if args.output.endswith(".parquet") else "jsonl")
    load_kwargs = source_kwargs(args)
    summary = tokenize_inputs(args.inputs, args.output, tokenizer=args.tokenizer, token_type=args.token_type,
                              device=args.device, batch_windows=args.batch_size, batch_samples=args.batch_samples,
                              workers=args.workers, fmt=fmt, resume=args.resume, on_error=args.on_error,
                              return_ids=args.return_ids, load_kwargs=load_kwargs,
                              progress=None if sys.stderr.isatty() else False, resample=args.resample,
                              overwrite=args.overwrite)
    print(f"{summary.reads} reads tokenized into {printable_path(args.output)} ({summary.tokens:,} tokens, "
          f"{summary.samples:,} samples, {summary.samples_per_second:,.0f} samples/s"
          + (f", {summary.files_resumed} files resumed" if summary.files_resumed else "") + ")")
    print_skipped(summary, args.output)
    return 0
