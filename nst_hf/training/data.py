"""Training data: preprocessed reads held in a bounded pool, random chunks drawn reproducibly."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from nst_hf.errors import NstHfError
from nst_hf.io import open_reads
from nst_hf.preprocessing import PreprocessingConfig, resample_signal

logger = logging.getLogger(__name__)


def load_training_signals(inputs: Iterable, preprocessing: PreprocessingConfig, sampling_rate: float | None,
                          max_samples: int = 50_000_000, min_length: int = 1,
                          exclude_read_ids: Iterable[str] = ()) -> tuple[list[np.ndarray], dict]:
    """Preprocessed float32 signals of the distinct reads in ``inputs`` (resampled to ``sampling_rate``).

    A read id seen twice (the same read in several formats) is used once; reads in
    ``exclude_read_ids`` (held out for evaluation) are skipped. Bad reads are skipped and counted.
    Stops after ``max_samples`` samples so memory stays bounded. Returns ``(signals, stats)``.
    """
    from nst_hf.preprocessing import preprocess

    seen = set(exclude_read_ids)
    signals, stats = [], {"reads": 0, "samples": 0, "skipped": 0, "duplicates": 0, "resampled": 0}
    with open_reads(list(inputs), on_error="skip") as source:
        for record in source:
            if record.read_id in seen:
                stats["duplicates"] += 1
                continue
            seen.add(record.read_id)
            try:
                pa = record.signal_pa
                if sampling_rate and record.sampling_rate and abs(record.sampling_rate - sampling_rate) > 1e-6:
                    pa = resample_signal(pa, record.sampling_rate, sampling_rate)
                    stats["resampled"] += 1
                signal = preprocess(pa, preprocessing, sampling_rate=sampling_rate or record.sampling_rate)
            except (NstHfError, ValueError) as exc:
                logger.warning("training: skipping read %s: %s", record.read_id, exc)
                stats["skipped"] += 1
                continue
            if signal.size < min_length:
                stats["skipped"] += 1
                continue
            signals.append(signal)
            stats["reads"] += 1
            stats["samples"] += int(signal.size)
            if stats["samples"] >= max_samples:
                logger.info("training pool full at %d samples; later reads are not used", stats["samples"])
                break
        stats["skipped"] += len(source.skipped)
    if not signals:
        raise ValueError(f"no usable reads for training in {list(inputs)}")
    return signals, stats


class ChunkSampler:
    """Draws ``[batch, 1, chunk_length]`` chunks: reads weighted by length, uniform offsets, seeded."""

    def __init__(self, signals: list[np.ndarray], chunk_length: int, seed: int = 0):
        self.signals = [s for s in signals if s.size >= chunk_length]
        if not self.signals:
            raise ValueError(f"no read is as long as chunk_length={chunk_length}; lower --chunk-length")
        lengths = np.array([s.size - chunk_length + 1 for s in self.signals], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.chunk_length = chunk_length
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> np.ndarray:
        reads = self.rng.choice(len(self.signals), size=batch_size, p=self.weights)
        out = np.empty((batch_size, 1, self.chunk_length), dtype=np.float32)
        for row, index in enumerate(reads):
            signal = self.signals[index]
            start = int(self.rng.integers(0, signal.size - self.chunk_length + 1))
            out[row, 0] = signal[start:start + self.chunk_length]
        return out

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state
