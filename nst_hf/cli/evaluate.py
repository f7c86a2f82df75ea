"""``nst-hf evaluate``: codebook usage, entropy, perplexity, top-10 share, reconstruction error and SNR."""

from __future__ import annotations

import json
import sys

from nst_hf.cli._source import add_source_options, source_kwargs


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="token quality figures for a tokenizer on signal files",
                                   description="Codebook usage, token entropy/perplexity and top-10 code share per "
                                               "level; for VQ/RVQ the reconstruction MSE and SNR of decode_to_signal "
                                               "against the preprocessed signal.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("--tokenizer", default="default", help="folder, repo id, upstream file or 'default'")
    parser.add_argument("--token-type", default=None, help="RVQ levels to evaluate (L1..Ln)")
    parser.add_argument("--max-reads", type=int, default=None)
    parser.add_argument("--resample", action="store_true", help="resample reads to the tokenizer's rate")
    parser.add_argument("--basecalls", nargs="+", default=None, metavar="CALLS",
                        help="SAM/BAM/CRAM with move tables for these reads: adds base_information_bits, the mutual "
                             "information I(token; base) per level, and I(token; 3-mer)")
    add_source_options(parser)
    parser.add_argument("--plot", default=None, metavar="PNG", help="draw the first read (signal, reconstruction, tokens)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    from nst_hf.io import open_reads
    from nst_hf.auto import load_tokenizer
    from nst_hf.evaluate import evaluate_tokenizer, plot_read, require_matplotlib

    if args.plot:
        require_matplotlib()  # before the evaluation, not after it
    tok = load_tokenizer(args.tokenizer, **source_kwargs(args))
    report = evaluate_tokenizer(tok, args.inputs, args.token_type, args.max_reads, args.resample,
                                basecalls=args.basecalls)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['kind']} tokenizer on {report['reads']} reads")
        for level, stats in report["levels"].items():
            print(f"  {level}: {stats['tokens']:,} tokens, {stats['codes_used']}/{stats['codebook_size']} codes used "
                  f"({stats['usage']:.1%}), entropy {stats['entropy_bits']:.2f} bits, perplexity "
                  f"{stats['perplexity']:.1f}, top-10 share {stats['top10_share']:.1%}")
        if "base_information_bits" in report:
            info = report["base_information"]
            print(f"  base information over {info['frames']:,} frames of {info['basecalls']} basecalls "
                  f"(bases carry {info.get('base_entropy_bits', 0):.3f} bits, 3-mers "
                  f"{info.get('kmer3_entropy_bits', 0):.3f}):")
            baseline = info["shuffled_baseline_bits"]
            for level, bits in report["base_information_bits"].items():
                print(f"    {level}: I(token; base) {bits:.4f} bits, I(token; 3-mer) "
                      f"{report['kmer3_information_bits'][level]:.4f} bits (shuffled pairing: "
                      f"{baseline['base'][level]:.4f} / {baseline['kmer3'][level]:.4f})")
            if info["skipped"]:
                print(f"    {len(info['skipped'])} reads or basecalls not counted (see --json)")
        if "reconstruction" in report:
            rec = report["reconstruction"]
            print(f"  reconstruction: MSE {rec['mse']:.4f}, SNR {rec['snr_db']:.2f} dB over {rec['samples']:,} samples")
    if args.plot:  # after the report is out: a failing plot cannot lose it
        with open_reads(args.inputs, on_error="skip") as source:
            plot_read(tok, next(iter(source)), args.plot, token_type=args.token_type, resample=args.resample)
        print(f"plot: {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0
