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


#: Base letters → 0..3 (RNA's U as T); everything else is not counted.
_BASE_CODES = np.full(256, -1, dtype=np.int64)
for _i, _letters in enumerate(("Aa", "Cc", "Gg", "TtUu")):
    for _letter in _letters:
        _BASE_CODES[ord(_letter)] = _i


def entropy_bits(values: np.ndarray) -> float:
    """Plug-in entropy (bits) of integer samples with the Miller–Madow correction ``+ (m − 1) / (2 N ln 2)``,
    ``m`` the number of distinct values seen."""
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / values.size
    return float(-(p * np.log2(p)).sum() + (counts.size - 1) / (2 * values.size * np.log(2)))


def mutual_information_bits(x: np.ndarray, y: np.ndarray) -> float:
    """``I(X; Y) = H(X) + H(Y) − H(X, Y)`` in bits from paired non-negative integer samples, each entropy
    Miller–Madow corrected (:func:`entropy_bits`)."""
    x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    if x.shape != y.shape:
        raise ValueError(f"x and y must pair up, got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    joint = x * (int(y.max()) + 1) + y
    return entropy_bits(x) + entropy_bits(y) - entropy_bits(joint)


def frame_bases(placed, num_frames: int, samples_per_token: int, centre: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of a read, the base (0..3) whose span covers the frame's centre sample, and the 3-mer
    (``16 · previous + 4 · base + next``, 0..63) centred on it; -1 where not counted.

    Frame ``t``'s centre is ``t · samples_per_token + centre``. Base ``i`` spans from its start to the next
    base's start; the last base's span ends where the move table ends. Frames outside the called region,
    bases other than ACGT(U) and 3-mers without two neighbours or with another letter are -1.
    """
    bases = np.full(num_frames, -1, dtype=np.int64)
    kmers = np.full(num_frames, -1, dtype=np.int64)
    if placed.starts is None or placed.starts.size == 0 or num_frames == 0:
        return bases, kmers
    centres = np.arange(num_frames, dtype=np.int64) * samples_per_token + centre
    index = np.searchsorted(placed.starts, centres, side="right") - 1
    inside = (index >= 0) & (centres < placed.called_end)
    letters = _BASE_CODES[np.frombuffer(placed.bases.encode("ascii", "replace"), dtype=np.uint8)]
    bases[inside] = letters[index[inside]]
    middle = inside & (index >= 1) & (index + 1 < letters.size)
    i = index[middle]
    previous, following = letters[i - 1], letters[i + 1]
    ok = (previous >= 0) & (letters[i] >= 0) & (following >= 0)
    kmers[np.flatnonzero(middle)[ok]] = 16 * previous[ok] + 4 * letters[i][ok] + following[ok]
    return bases, kmers


class _BaseInformation:
    """Collects (code, base) and (code, 3-mer) pairs over reads for :func:`evaluate_tokenizer`."""

    def __init__(self, basecalls, levels: int):
        self.basecalls = basecalls
        self.codes: list[list[np.ndarray]] = [[] for _ in range(levels)]
        self.bases: list[np.ndarray] = []
        self.kmers: list[np.ndarray] = []
        self.paired = 0
        self.skipped: list[dict] = []

    def add(self, tokenizer, record, codes: np.ndarray, grid_samples: int, resample: bool) -> None:
        from nst_hf.errors import InvalidReadError
        from nst_hf.pairs import grid_of, place_call

        call_ids = self.basecalls.for_signal(record.read_id)
        if not call_ids:
            self.skipped.append({"read_id": record.read_id, "reason": "no basecall for this read"})
            return
        _, ratio = grid_of(tokenizer, record, resample)
        for call_id in call_ids:
            try:
                placed = place_call(self.basecalls[call_id], record.num_samples, grid_samples, ratio)
            except InvalidReadError as exc:
                logger.warning("not counting basecall %s: %s", call_id, exc)
                self.skipped.append({"read_id": call_id, "reason": str(exc)})
                continue
            bases, kmers = frame_bases(placed, codes.shape[0], tokenizer.samples_per_token, tokenizer.token_centre)
            keep = bases >= 0
            if not keep.any():
                continue
            self.paired += 1
            for level, store in enumerate(self.codes):
                store.append(codes[keep, level])
            self.bases.append(bases[keep])
            self.kmers.append(kmers[keep])

    def report(self) -> dict:
        if not self.bases:
            return {"base_information_bits": {}, "kmer3_information_bits": {},
                    "base_information": {"frames": 0, "basecalls": 0, "skipped": self.skipped}}
        bases, kmers = np.concatenate(self.bases), np.concatenate(self.kmers)
        with_kmer = kmers >= 0
        levels = {f"L{i + 1}": np.concatenate(c) for i, c in enumerate(self.codes)}
        # the same counts with the pairing shuffled: what the estimator reports for tokens that carry nothing
        # (its remaining bias, large when codes × 64 3-mers approaches the number of frames)
        order = np.random.default_rng(0).permutation(bases.size)
        shuffled_bases, shuffled_kmers = bases[order], kmers[order]
        both = with_kmer & (shuffled_kmers >= 0)
        baseline = {"base": {k: mutual_information_bits(c, shuffled_bases) for k, c in levels.items()},
                    "kmer3": {k: mutual_information_bits(c[both], shuffled_kmers[both]) for k, c in levels.items()}}
        return {
            "base_information_bits": {k: mutual_information_bits(c, bases) for k, c in levels.items()},
            "kmer3_information_bits": {k: mutual_information_bits(c[with_kmer], kmers[with_kmer])
                                       for k, c in levels.items()},
            "base_information": {"frames": int(bases.size), "frames_with_3mer": int(with_kmer.sum()),
                                 "basecalls": self.paired, "base_entropy_bits": entropy_bits(bases),
                                 "kmer3_entropy_bits": entropy_bits(kmers[with_kmer]),
                                 "shuffled_baseline_bits": baseline, "skipped": self.skipped},
        }


def evaluate_tokenizer(tokenizer, inputs: Iterable, token_type: str | None = None, max_reads: int | None = None,
                       resample: bool = False, basecalls=None) -> dict:
    """Codebook statistics per level and, for VQ/RVQ, reconstruction MSE/SNR of ``decode_to_signal``.

    With ``basecalls`` (SAM/BAM/CRAM/FASTQ paths or an :func:`~nst_hf.io.basecalls.open_basecalls` mapping)
    the report adds ``base_information_bits``: per level, the mutual information I(token; base) in bits
    between each frame's code and the base whose span covers the frame's centre (see :func:`frame_bases`),
    from Miller–Madow-corrected plug-in entropies; ``kmer3_information_bits`` the same for the 3-mer
    centred on that base; ``base_information`` the counts, the bases' own entropy (the ceiling) and
    ``shuffled_baseline_bits``, the same estimates with the frame–base pairing shuffled (what remains of the
    estimator's bias: subtract it, or prefer fewer codes, when it is not small).
    """
    levels = tokenizer.num_levels(token_type)
    per_level: list[list[np.ndarray]] = [[] for _ in range(levels)]
    squared_error = power = samples = 0.0
    reads = 0
    information = None
    if basecalls is not None:
        from nst_hf.io.basecalls import Basecalls, open_basecalls

        information = _BaseInformation(basecalls if isinstance(basecalls, Basecalls) else open_basecalls(basecalls),
                                       levels)
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
            if information is not None:
                information.add(tokenizer, record, codes, target.size, resample)
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
    if information is not None:
        result.update(information.report())
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
