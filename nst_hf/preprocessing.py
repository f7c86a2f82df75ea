"""Signal preprocessing: med/MAD normalisation, median filter, zero-phase Butterworth low-pass,
and the K-Means chain (spike removal, baseline removal, median filter 5).

Every function takes a 1-D pA (or normalised) array and returns a new float32 array; the
:class:`PreprocessingConfig` records which steps a tokenizer applies and is saved with it as
``preprocessor_config.json`` so that one checkpoint always yields the same tokens.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction

import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal as sps

from nst_hf._threads import compute_threads, run_in_ranges
from nst_hf.errors import ConstantSignalError, InvalidSignalError

try:
    from nst_hf import _rank_filter
except ImportError:  # built without a C compiler
    _rank_filter = None

#: Scales a median absolute deviation to a Gaussian standard deviation.
MAD_TO_SD = 1.4826
#: Running-median windows of the K-Means chain (the even 5000 is deliberate: SciPy centres it asymmetrically).
SPIKE_WINDOW = 5000
BASELINE_WINDOW = 5001
SPIKE_THRESHOLD_SD = 5.0
KMEANS_MEDIAN_KERNEL = 5
#: Fewest output samples per thread of the compiled running median (each share sorts one window to start).
RANK_FILTER_MIN_SHARE = 20_000
#: Signals with at most this many distinct values take the rank filter's histogram path (raw nanopore current
#: is 16-bit ADC counts: a read has a few hundred), and the index steps a sample it may average before the
#: rest goes back to the heaps.
RANK_FILTER_MAX_CODES = 1 << 16
RANK_FILTER_STEP_BUDGET = 32
NORMALIZATIONS = ("med_mad", "none")

FloatArray = npt.NDArray[np.float32]


def _as_signal(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InvalidSignalError(f"expected a 1-D signal, got an array of shape {arr.shape}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InvalidSignalError(f"signal contains {bad} NaN/inf values; clean or drop the read before tokenizing")
    return arr


def median(x: np.ndarray) -> np.floating:
    """``np.median(x)`` of a finite 1-D array, the same value, by one single-index partition.

    ``np.median`` partitions at both middle indices and at the last one (its NaN check), which takes NumPy's
    slower multi-index selection: 14.7 against 2.5 ms on 847k samples. With an even length the mean of the
    two middle values is computed as ``np.median`` does, ``(low + high) / 2`` in the array's dtype.
    """
    n = x.size
    if n == 0:
        return np.median(x)
    half = n // 2
    part = np.partition(x, half)
    high = part[half]
    if n % 2:
        return high
    return (part[:half].max() + high) / 2


def med_mad(x: np.ndarray) -> tuple[np.float32, np.float32]:
    """Return ``(median, MAD_TO_SD * median(|x - median|))`` of a finite float32 signal."""
    med = median(x)
    mad = MAD_TO_SD * median(np.abs(x - med))
    return med, mad


def normalize(x) -> FloatArray:
    """Med/MAD normalisation: ``(x - med) / mad`` with ``mad = 1.4826 * median(|x - med|)``.

    Raises :class:`ConstantSignalError` when ``mad == 0`` (a constant signal has no tokens).
    """
    x = _as_signal(x)
    if x.size == 0:
        return x.copy()
    med, mad = med_mad(x)
    if mad == 0:
        raise ConstantSignalError("signal is constant (median absolute deviation is 0) and cannot be normalised")
    return ((x - med) / mad).astype(np.float32, copy=False)


def median_filter(x, kernel_size: int) -> FloatArray:
    """``scipy.signal.medfilt(x, kernel_size)`` (zero-padded edges), float32 out.

    Runs through the compiled running rank filter when built (the same values: a median is one of the
    samples or a padding zero), else SciPy.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"median filter kernel_size must be a positive odd integer, got {kernel_size}")
    x = _as_signal(x)
    if x.size == 0:
        return x.copy()
    if not _native_median_enabled():
        return sps.medfilt(x, kernel_size=kernel_size).astype(np.float32, copy=False)
    half = kernel_size // 2
    return _running_rank(np.pad(x, half), x.size, kernel_size)


def lowpass_filter(x, cutoff_hz: float, sampling_rate: float, order: int = 6) -> FloatArray:
    """Zero-phase Butterworth low-pass: ``filtfilt(*butter(order, cutoff / (fs / 2)), x)``, float32 out."""
    nyquist = sampling_rate / 2.0
    if not 0 < cutoff_hz < nyquist:
        raise ValueError(
            f"low-pass cutoff must be between 0 and the Nyquist frequency {nyquist:g} Hz "
            f"(sampling rate {sampling_rate:g} Hz), got {cutoff_hz:g} Hz"
        )
    x = _as_signal(x)
    b, a = sps.butter(order, cutoff_hz / nyquist)
    padlen = 3 * max(len(a), len(b))
    if x.size <= padlen:
        raise InvalidSignalError(
            f"signal of {x.size} samples is too short for the order-{order} low-pass filter "
            f"(needs more than {padlen}); disable low-pass filtering for such short reads"
        )
    return sps.filtfilt(b, a, x).astype(np.float32)


def running_median(x, window: int) -> FloatArray:
    """``scipy.ndimage.median_filter(x, size=window, mode="reflect")``.

    For an even ``window`` SciPy takes samples ``i - window//2 … i + window//2 - 1`` and returns the
    upper of the two middle values. Signals of at least ``window`` samples go through the compiled
    ``nst_hf._rank_filter`` (the same values; it releases the GIL, so long reads are split over threads);
    shorter ones, or installs without the compiled module, use SciPy itself.
    """
    x = _as_signal(x)
    if x.size == 0:
        return x.copy()
    if x.size < window or not _native_median_enabled():
        return ndimage.median_filter(x, size=window, mode="reflect")
    left = window // 2
    padded = np.pad(x, (left, window - 1 - left), mode="symmetric")  # = SciPy's "reflect" for pads <= len(x)
    return _running_rank(padded, x.size, window)


def _native_median_enabled() -> bool:
    """Whether ``nst_hf._rank_filter`` is built and ``NST_HF_DISABLE_NATIVE_MEDIAN`` is unset."""
    return _rank_filter is not None and os.environ.get("NST_HF_DISABLE_NATIVE_MEDIAN", "") in ("", "0")


def _running_rank(padded: np.ndarray, size: int, window: int) -> FloatArray:
    """``out[i]`` = median (element ``window // 2`` in order) of ``padded[i:i + window]`` for ``i < size``,
    by the compiled rank filter: a min/max network for windows of 5; for wider ones a histogram over the
    indices of the samples among their sorted distinct values when there are at most
    :data:`RANK_FILTER_MAX_CODES` of them, else (or when the values lie too scattered) two heaps. Long
    signals are split over threads."""
    out = np.empty(size, dtype=np.float32)
    values = np.unique(padded) if window > 5 else None
    if values is not None and values.size <= RANK_FILTER_MAX_CODES:
        def fill(start: int, stop: int) -> None:
            _rank_filter.running_rank_codes(padded, values, out, window, window // 2, start, stop,
                                            RANK_FILTER_STEP_BUDGET)
    else:
        def fill(start: int, stop: int) -> None:
            _rank_filter.running_rank(padded, out, window, window // 2, start, stop)

    run_in_ranges("rank-filter", fill, size, min(compute_threads(), size // RANK_FILTER_MIN_SHARE))
    return out


def resampling_ratio(source_rate: float, target_rate: float) -> Fraction:
    """``up / down`` of :func:`resample_signal`: sample ``i`` of the source lies at ``i * up / down`` after it."""
    return Fraction(target_rate / source_rate).limit_denominator(1000)


def resample_signal(x, source_rate: float, target_rate: float) -> FloatArray:
    """Polyphase resampling (``scipy.signal.resample_poly``) from ``source_rate`` to ``target_rate`` Hz."""
    ratio = resampling_ratio(source_rate, target_rate)
    return sps.resample_poly(_as_signal(x), ratio.numerator, ratio.denominator).astype(np.float32)


def _robust_sd(residual: np.ndarray) -> float:
    return max(MAD_TO_SD * median(np.abs(residual)), 1.0)


def remove_spikes(y, window: int = SPIKE_WINDOW, threshold_sd: float = SPIKE_THRESHOLD_SD) -> FloatArray:
    """Replace samples further than ``threshold_sd`` robust SDs from the running median.

    A spike takes the already-cleaned value before it (the running median's first value at i = 0),
    which is a forward fill from the last non-spike sample.
    """
    y = _as_signal(y)
    if y.size == 0:
        return y.copy()
    base = running_median(y, window)
    deviation = np.abs(y - base)
    spikes = np.flatnonzero(deviation > threshold_sd * max(MAD_TO_SD * median(deviation), 1.0))
    out = y.copy()
    if spikes.size:  # spikes are rare (~0.03 % of real samples): fill run by run, not sample by sample
        run_starts = np.flatnonzero(np.diff(spikes, prepend=-2) > 1)
        first = spikes[run_starts]  # a run's first spike; the sample before it is not a spike
        fill = np.where(first > 0, y[np.maximum(first - 1, 0)], base[0])
        out[spikes] = np.repeat(fill, np.diff(run_starts, append=spikes.size))
    return out


def remove_baseline(z, window: int = BASELINE_WINDOW) -> FloatArray:
    """Subtract the running median and divide by the robust SD (floored at 1) of the residual."""
    z = _as_signal(z)
    if z.size == 0:
        return z.copy()
    residual = z - running_median(z, window)
    return (residual / _robust_sd(residual)).astype(np.float32, copy=False)


def kmeans_chain(x) -> FloatArray:
    """The K-Means tokenizer's chain: normalise → remove spikes → remove baseline → median filter 5."""
    y = normalize(x)
    if y.size == 0:
        return y
    return median_filter(remove_baseline(remove_spikes(y)), KMEANS_MEDIAN_KERNEL)


@dataclass(frozen=True)
class PreprocessingConfig:
    """Which preprocessing steps a tokenizer applies, in order: normalise → median filter → low-pass.

    Parameters
    ----------
    normalization : {"med_mad", "none"}
        Med/MAD normalisation (upstream "huada"), on by default.
    median_kernel : int
        ``scipy.signal.medfilt`` kernel size; 0 disables it (upstream ``medf``).
    lowpass_cutoff_hz : float
        Butterworth low-pass cutoff in Hz; 0 disables it (upstream ``lpf``).
    filter_order : int
        Butterworth order (6).
    sampling_rate : float, optional
        The rate (Hz) the tokenizer was trained at; used for bare arrays and checked against reads.
    kmeans_chain : bool
        Apply the K-Means chain instead (normalise, spike and baseline removal, median filter 5).
    """

    normalization: str = "med_mad"
    median_kernel: int = 0
    lowpass_cutoff_hz: float = 0.0
    filter_order: int = 6
    sampling_rate: float | None = None
    kmeans_chain: bool = False

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.median_kernel < 0 or (self.median_kernel and self.median_kernel % 2 == 0):
            raise ValueError(f"median_kernel must be 0 (off) or a positive odd integer, got {self.median_kernel}")
        if self.lowpass_cutoff_hz < 0:
            raise ValueError(f"lowpass_cutoff_hz must be >= 0 (0 = off), got {self.lowpass_cutoff_hz}")
        if self.filter_order < 1:
            raise ValueError(f"filter_order must be >= 1, got {self.filter_order}")
        if self.sampling_rate is not None and self.sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be positive, got {self.sampling_rate}")
        if self.kmeans_chain:
            ignored = [f"{name}={getattr(self, name)!r}" for name, default in
                       (("normalization", "med_mad"), ("median_kernel", 0), ("lowpass_cutoff_hz", 0.0),
                        ("filter_order", 6)) if getattr(self, name) != default]
            if ignored:
                raise ValueError(f"the K-Means chain has fixed steps, so {', '.join(ignored)} would be ignored; "
                                 "leave these fields at their defaults with kmeans_chain=True")
        if self.lowpass_cutoff_hz and self.sampling_rate and self.lowpass_cutoff_hz >= self.sampling_rate / 2:
            raise ValueError(
                f"lowpass_cutoff_hz {self.lowpass_cutoff_hz} must be below the Nyquist frequency "
                f"{self.sampling_rate / 2} Hz of sampling_rate {self.sampling_rate}"
            )

    def replace(self, **changes) -> PreprocessingConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessingConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"preprocessor_type", "nst_hf_version"}
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json_string(self) -> str:
        return json.dumps({"preprocessor_type": "NstSignalPreprocessor", **self.to_dict()}, indent=2, sort_keys=True)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON (atomically)."""
        from nst_hf.output import atomic_write_text

        atomic_write_text(path, self.to_json_string() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreprocessingConfig:
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))


def preprocess(signal_pa, config: PreprocessingConfig | None = None, sampling_rate: float | None = None) -> FloatArray:
    """Apply ``config`` to one read's pA signal and return float32.

    ``sampling_rate`` (Hz) is the read's own rate, used by the low-pass filter; it defaults to
    ``config.sampling_rate``. Raises :class:`ConstantSignalError` for a constant signal when
    normalising and :class:`InvalidSignalError` for NaN/inf or non-1-D input.
    """
    config = config or PreprocessingConfig()
    if config.kmeans_chain:
        return kmeans_chain(signal_pa)
    y = normalize(signal_pa) if config.normalization == "med_mad" else _as_signal(signal_pa).copy()
    if config.median_kernel:
        y = median_filter(y, config.median_kernel)
    if config.lowpass_cutoff_hz:
        rate = sampling_rate or config.sampling_rate
        if not rate:
            raise ValueError("low-pass filtering needs a sampling rate: pass sampling_rate= or set it in the config")
        y = lowpass_filter(y, config.lowpass_cutoff_hz, rate, config.filter_order)
    return y
