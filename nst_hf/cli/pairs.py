"""``nst-hf pairs``: signal files + basecalls (SAM/BAM/CRAM with move tables, or FASTQ) → paired rows."""

from __future__ import annotations

import sys

from nst_hf.cli._early import begin_readers
from nst_hf.cli._source import add_source_options, source_kwargs
from nst_hf.cli._summary import print_skipped


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pairs", help="pair signal tokens with the basecaller's bases (LM basecalling corpora)",
        description="Tokenize every read of FAST5/POD5/SLOW5/BLOW5 files once, join it by read id to its basecall "
                    "(SAM/BAM/CRAM with mv/ts/ns move tables from dorado or guppy, or FASTQ for whole-read pairs), "
                    "and write one row per chunk: id, read_id, chunk_start, chunk_size, text, bases, base_starts "
                    "(the frame where each base starts). A chunk's text is exactly the whole read's tokens for its "
                    "frames. Reverse-strand records of mapped files are turned back into the basecaller's "
                    "orientation; secondary and supplementary records are skipped; split reads (pi/sp) are placed "
                    "in their parent's signal. Same guarantees as `nst-hf tokenize`: atomic output, --resume, a "
                    "report of every read or basecall left out (OUTPUT.report.json).")
    parser.add_argument("inputs", nargs="+", metavar="SIGNALS", help="signal files or directories (recursive)")
    parser.add_argument("--basecalls", nargs="+", required=True, metavar="CALLS",
                        help="SAM/BAM/CRAM/FASTQ files or directories with the basecalls of those reads")
    parser.add_argument("-o", "--output", required=True, help="output file (.jsonl, .jsonl.gz, .parquet) or folder")
    parser.add_argument("--tokenizer", default="default",
                        help="saved folder, Hub repo id, upstream .pth/.npy file, or 'default' (the embedded one)")
    parser.add_argument("--token-type", default=None, help="RVQ: emit levels L1..Lk (default L1)")
    parser.add_argument("--chunk-size", type=int, default=0,
                        help="samples per chunk, a multiple of the tokenizer's samples per token (default 0: one "
                             "row per read)")
    parser.add_argument("--chunk-overlap", type=int, default=0,
                        help="samples shared by consecutive chunks, a multiple of the samples per token (default 0)")
    parser.add_argument("--format", choices=["jsonl", "parquet", "dataset"], default=None,
                        help="output format (default: from the output name; jsonl otherwise)")
    parser.add_argument("--reference", default=None, help="FASTA reference for CRAM files that need one")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="where the model runs (default cpu)")
    parser.add_argument("--batch-samples", type=int, default=1_000_000,
                        help="samples of many reads encoded together (default 1e6)")
    parser.add_argument("--workers", type=int, default=1, help="processes, each taking whole files (default 1)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier nst-hf output (only once the new one is complete)")
    parser.add_argument("--resample", action="store_true",
                        help="resample reads whose sampling rate differs from the tokenizer's; move-table positions "
                             "are mapped through the same ratio and chunk positions count resampled samples")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="stop at the first bad read or unmatched basecall (default) or skip and report it")
    add_source_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    begin_readers(args.inputs, args.resume, args.workers)
    from nst_hf.pipeline import pair_inputs, printable_path

    fmt = args.format or ("parquet" if args.output.endswith(".parquet") else "jsonl")
    summary = pair_inputs(args.inputs, args.basecalls, args.output, tokenizer=args.tokenizer,
                          chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, token_type=args.token_type,
                          device=args.device, batch_samples=args.batch_samples, workers=args.workers, fmt=fmt,
                          resume=args.resume, on_error=args.on_error, load_kwargs=source_kwargs(args),
                          progress=None if sys.stderr.isatty() else False, resample=args.resample,
                          overwrite=args.overwrite, reference=args.reference)
    print(f"{summary.reads} basecalled reads paired into {printable_path(args.output)} ({summary.rows:,} rows, "
          f"{summary.tokens:,} tokens, {summary.bases:,} bases, {summary.samples_per_second:,.0f} samples/s"
          + (f", {summary.files_resumed} files resumed" if summary.files_resumed else "") + ")")
    print_skipped(summary, args.output, "reads or basecalls")
    return 0
