"""Re-create the embedded default tokenizer (nst_hf/pretrained/default) from the shared real reads.

Run from the repository root with ../shared beside it:

    python examples/make_default_tokenizer.py               # train, evaluate, write the card
    python examples/make_default_tokenizer.py --card-only   # keep the weights; re-evaluate and re-write the card

It trains with the project's own `nst-hf train vq` on the MIT/MPL-licensed reads of ../shared/data/real
(the GPL read5/ files are not used), holds out the R10.4.1 run PAM14583 (19 reads) for evaluation,
writes the held-out figures into the model card, and drops the resumable training checkpoint.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "nst_hf" / "pretrained" / "default"
DATA = "../shared/data/real"
TRAIN_DIRS = ["pod5-file-format", "vbz_compression", "ont_fast5_api", "slow5tools", "blue-crab", "slow5-pod5-bench",
              "test_datasets"]
HELD_OUT = f"{DATA}/test_datasets/pod5/PAM14583_ee1ba89e_88.pod5"
COMMAND = (["nst-hf", "train", "vq", *[f"{DATA}/{d}" for d in TRAIN_DIRS], "-o", "nst_hf/pretrained/default",
            "--cnn-type", "1", "--codebook-size", "1024", "--steps", "1500", "--batch-size", "32",
            "--chunk-length", "1200", "--sampling-rate", "5000", "--hold-out", HELD_OUT, "--seed", "0"])


PAIRED = "../shared/data/paired/squigualiser_r9"


def base_information_text(tok) -> tuple[str, dict]:
    """What the tokens carry about the bases, on the shared paired R9.4.1 reads (``nst-hf evaluate --basecalls``)."""
    from nst_hf.evaluate import evaluate_tokenizer

    report = evaluate_tokenizer(tok, [ROOT / PAIRED / "reads.blow5"], resample=True,
                                basecalls=ROOT / PAIRED / "moves.sam")
    info = report["base_information"]
    text = (f"\n\nBase information, on the 40 R9.4.1 reads of `{PAIRED}` with their Guppy basecalls "
            f"({info['frames']:,} frames; the bases themselves carry {info['base_entropy_bits']:.2f} bits, their "
            f"3-mers {info['kmer3_entropy_bits']:.2f}): I(token; base) = "
            f"{report['base_information_bits']['L1']:.3f} bits, I(token; 3-mer centred on the base) = "
            f"{report['kmer3_information_bits']['L1']:.3f} bits (Miller–Madow corrected; with the frame–base pairing "
            f"shuffled, {info['shuffled_baseline_bits']['base']['L1']:.3f} and "
            f"{info['shuffled_baseline_bits']['kmer3']['L1']:.3f}). Measure: "
            f"`nst-hf evaluate {PAIRED}/reads.blow5 --basecalls {PAIRED}/moves.sam --resample`.")
    return text, report


def main(card_only: bool = False) -> None:
    """Train (unless ``card_only``: re-evaluate the saved default and re-write its card) and evaluate."""
    if not card_only:
        subprocess.run([sys.executable, "-m", "nst_hf", *COMMAND[1:]], cwd=ROOT, check=True)
    import nst_hf
    from nst_hf.evaluate import evaluate_tokenizer

    tok = nst_hf.NstVQTokenizer.from_pretrained(OUT)
    report = evaluate_tokenizer(tok, [ROOT / HELD_OUT], resample=True)
    stats, rec = report["levels"]["L1"], report["reconstruction"]
    tok.training_info["command"] = " ".join(shlex.quote(a) for a in COMMAND)
    tok.training_info["license"] = "mit"
    tok.training_info["data_files"] = f"all signal files under {DATA}/{{{','.join(TRAIN_DIRS)}}} (MIT / MPL-2.0), " \
                                      f"minus the reads of {HELD_OUT}"
    if not card_only:
        tok.training_info["description"] += (" Training data: every distinct calibrated read of the MIT/MPL-2.0 files "
                                             f"in shared/data/real ({', '.join(TRAIN_DIRS)}; not the GPL read5/ "
                                             "files), resampled to 5 kHz, minus the held-out run.")
    tok.training_info["evaluation"] = (
        f"Held out: {report['reads']} reads of `{HELD_OUT}` (R10.4.1, 4 kHz resampled to 5 kHz), "
        f"{stats['tokens']:,} tokens.\n\n| metric | value |\n|---|---|\n"
        f"| codebook usage | {stats['codes_used']}/{stats['codebook_size']} ({stats['usage']:.1%}) |\n"
        f"| token entropy | {stats['entropy_bits']:.2f} bits |\n| perplexity | {stats['perplexity']:.1f} |\n"
        f"| top-10 code share | {stats['top10_share']:.1%} |\n"
        f"| reconstruction MSE (normalised signal) | {rec['mse']:.4f} |\n| reconstruction SNR | {rec['snr_db']:.2f} dB |\n\n"
        "Re-run: `python examples/make_default_tokenizer.py`; measure: "
        f"`nst-hf evaluate {HELD_OUT} --resample`.")
    information, paired_report = base_information_text(tok)
    tok.training_info["evaluation"] += information
    tok.training_info["held_out_evaluation"] = report
    tok.training_info["base_information"] = {key: paired_report[key] for key in
                                             ("base_information_bits", "kmer3_information_bits", "base_information")}
    (OUT / "training_checkpoint.pt").unlink(missing_ok=True)
    tok.save_pretrained(OUT)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(card_only="--card-only" in sys.argv[1:])
