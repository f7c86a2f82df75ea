"""Token quality: codebook usage, entropy, perplexity, top-10 share, and reconstruction error / SNR."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from nst_hf.io import open_reads

logger = logging.getLogger(__name__)


def code_statistics(codes: np.ndarray, codebook_size: int) -> dict:
    """Usage and information content of a sequence of codes (one level).

    ``entropy_bits`` is the Shannon entropy of the code distribution, ``perplexity = 2**entropy``,
    ``usage`` the fraction of the codebook used at least once, ``top10_share`` the share of the 10 most
    frequent codes.
    """
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    counts = np.bincount(codes, minlength=codebook_size) if codes.size else np.zeros(codebook_size, np.int64)
    total = int(counts.sum())
    p = counts[counts > 0] / max(total, 1)
    entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
    return {"tokens": total, "codes_used": int((counts > 0).sum()), "codebook_size": int(codebook_size),
            "usage": float((counts > 0).sum() / codebook_size), "entropy_bits": entropy,
            "perplexity": float(2.0 ** entropy), "top10_share": float(np.sort(counts)[::-1][:10].sum() / max(total, 1))}


def evaluate_tokenizer(tokenizer, inputs: Iterable, token_type: str | None = None, max_reads: int | None = None,
                       resample: bool = False) -> dict:
    """Codebook statistics per level and, for VQ/RVQ, reconstruction MSE/SNR of ``decode_to_signal``."""
    levels = tokenizer.num_levels(token_type)
    per_level: list[list[np.ndarray]] = [[] for _ in range(levels)]
    squared_error = power = samples = 0.0
    reads = 0
    with open_reads(list(inputs), on_error="skip") as source:
        for record in source:
            if max_reads is not None and reads >= max_reads:
                break
            target = tokenizer.preprocess_signal(record.signal_pa, record.sampling_rate, resample)
            (codes,) = tokenizer.encode_preprocessed([target], token_type)
            if codes.size == 0:
                continue
            reads += 1
            for level in range(levels):
                per_level[level].append(codes[:, level])
            if hasattr(tokenizer, "decode_to_signal"):
                from nst_hf.tokenizers.vocab import codes_to_ids

                recon = tokenizer.decode_to_signal(codes_to_ids(codes, tokenizer.codebook_size, tokenizer.is_rvq))
                n = min(target.size, recon.size)
                squared_error += float(np.sum((target[:n].astype(np.float64) - recon[:n]) ** 2))
                power += float(np.sum(target[:n].astype(np.float64) ** 2))
                samples += n
    result = {"kind": tokenizer.bwav_kind, "reads": reads,
              "levels": {f"L{i + 1}": code_statistics(np.concatenate(c) if c else np.zeros(0), tokenizer.codebook_size)
                         for i, c in enumerate(per_level)}}
    if samples:
        mse = squared_error / samples
        result["reconstruction"] = {"mse": mse, "snr_db": float(10 * np.log10(power / samples / mse)),
                                    "samples": int(samples)}
    return result


def require_matplotlib():
    """The ``matplotlib`` module (Agg backend), or a clear error naming the extra to install."""
    try:
        import matplotlib
    except ImportError as exc:
        from nst_hf.errors import MissingDependencyError

        raise MissingDependencyError("--plot needs matplotlib: pip install 'nst-hf[plot]'") from exc
    matplotlib.use("Agg")
    return matplotlib


def plot_read(tokenizer, record, path, max_samples: int = 3000, token_type: str | None = None,
              resample: bool = False) -> None:
    """Draw a read's preprocessed signal, its reconstruction (VQ/RVQ) and its token track to ``path`` (PNG);
    ``resample=True`` as for tokenizing (a read at another rate than the tokenizer's)."""
    require_matplotlib()
    import matplotlib.pyplot as plt

    target = tokenizer.preprocess_signal(record.signal_pa, record.sampling_rate, resample)[:max_samples]
    (codes,) = tokenizer.encode_preprocessed([target], token_type)
    step = tokenizer.samples_per_token
    figure, axes = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
    axes[0].plot(target, lw=0.7, label="preprocessed signal")
    if hasattr(tokenizer, "decode_to_signal") and codes.size:
        from nst_hf.tokenizers.vocab import codes_to_ids

        recon = tokenizer.decode_to_signal(codes_to_ids(codes, tokenizer.codebook_size, tokenizer.is_rvq))
        axes[0].plot(recon[:target.size], lw=0.7, label="reconstruction")
    axes[0].set_ylabel("normalised current")
    axes[0].legend(loc="upper right")
    positions = np.arange(codes.shape[0]) * step
    for level in range(codes.shape[1]):
        axes[1].step(positions, codes[:, level], where="post", lw=0.7, label=f"L{level + 1}")
    axes[1].set_ylabel("token (code)")
    axes[1].set_xlabel("sample")
    axes[1].legend(loc="upper right")
    figure.suptitle(f"{record.read_id} — {type(tokenizer).__name__}")
    figure.tight_layout()
    from nst_hf.output import atomic_path

    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
