"""A small squiggle simulator: piecewise-constant current levels with realistic dwell times and noise.

It produces honest synthetic reads for the shipped sample file, examples and tests; it is not a
basecalling-grade simulator (no k-mer model), just nanopore-shaped signal.
"""

from __future__ import annotations

import uuid

import numpy as np

from nst_hf.io.records import SignalRecord


def simulate_read(
    rng: np.random.Generator,
    num_samples: int,
    sampling_rate: float = 5000.0,
    bases_per_second: float = 400.0,
    level_mean_pa: float = 90.0,
    level_sd_pa: float = 15.0,
    noise_sd_pa: float = 2.0,
    spike_rate: float = 2e-4,
) -> np.ndarray:
    """One read's current in pA (float64): gamma-distributed dwells, normal levels, white noise, rare spikes."""
    mean_dwell = sampling_rate / bases_per_second
    dwells = np.maximum(1, rng.gamma(shape=2.5, scale=mean_dwell / 2.5, size=num_samples // 2 + 2).astype(int))
    bounds = np.cumsum(dwells)
    count = int(np.searchsorted(bounds, num_samples)) + 1
    levels = rng.normal(level_mean_pa, level_sd_pa, size=count)
    index = np.searchsorted(bounds[:count], np.arange(num_samples), side="right")
    current = levels[index] + rng.normal(0.0, noise_sd_pa, size=num_samples)
    spikes = rng.random(num_samples) < spike_rate
    current[spikes] += rng.choice([-1, 1], size=int(spikes.sum())) * rng.uniform(60, 150, size=int(spikes.sum()))
    return current


def simulate_reads(
    num_reads: int = 8,
    min_samples: int = 5000,
    max_samples: int = 40000,
    sampling_rate: float = 5000.0,
    digitisation: float = 8192.0,
    range_pa: float = 1500.0,
    offset: float = 10.0,
    seed: int = 0,
) -> list[SignalRecord]:
    """Simulated reads as :class:`SignalRecord` with int16 ADC samples and FAST5-style calibration."""
    rng = np.random.default_rng(seed)
    scale = range_pa / digitisation
    records = []
    for i in range(num_reads):
        length = int(rng.integers(min_samples, max_samples + 1))
        current = simulate_read(rng, length, sampling_rate=sampling_rate)
        raw = np.clip(np.round(current / scale - offset), -digitisation / 2, digitisation / 2 - 1).astype(np.int16)
        read_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        records.append(SignalRecord(
            read_id=read_id, signal=raw, sampling_rate=sampling_rate, offset=offset, range=range_pa,
            digitisation=digitisation, channel=str(i + 1), start_sample=int(rng.integers(0, 10**7)),
            end_reason="signal_positive", run_id=f"nst_hf_simulated_seed{seed}",
        ))
    return records
