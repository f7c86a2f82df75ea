"""Preprocessing equals the SPEC's SciPy formulas on real reads and edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from scipy import signal as sps

import nst_hf
from nst_hf import preprocessing as pp
from nst_hf.errors import ConstantSignalError, InvalidSignalError

REAL_FILES = ["test_datasets/pod5/PAM14583_ee1ba89e_88.pod5", "slow5tools/test/data/raw/degrade/p2solo_ulk114_dna.blow5",
              "blue-crab/test/data/raw/p2s/pod5/b/b1.pod5", "ont_fast5_api/test/data/multi_read/batch_0.fast5"]


@pytest.fixture(scope="module")
def real_reads(real_dir):
    reads = []
    for rel in REAL_FILES:
        with nst_hf.open_reads(real_dir / rel) as source:
            reads += [(r.signal_pa, r.sampling_rate) for r in source]
    return reads[:12] + reads[-6:]


def spec_normalize(x):
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    return (x - med) / mad


def spec_spike_removal(y):
    """The SPEC's literal left-to-right loop."""
    base = ndimage.median_filter(y, size=5000, mode="reflect")
    r = y - base
    s = max(1.4826 * np.median(np.abs(r)), 1.0)
    out = y.copy()
    for i in range(len(y)):
        if abs(r[i]) > 5 * s:
            out[i] = out[i - 1] if i > 0 else base[0]
    return out


def spec_baseline_removal(z):
    base = ndimage.median_filter(z, size=5001, mode="reflect")
    r = z - base
    s = max(1.4826 * np.median(np.abs(r)), 1.0)
    return r / s


def test_normalize_median_filter_lowpass_equal_spec(real_reads):
    for pa, rate in real_reads:
        y = pp.normalize(pa)
        ref = spec_normalize(pa)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, ref)
        if pa.size > 5:
            np.testing.assert_array_equal(pp.median_filter(y, 5), sps.medfilt(ref, kernel_size=5))
        if pa.size > 21:
            b, a = sps.butter(6, 1000 / (rate / 2))
            np.testing.assert_allclose(pp.lowpass_filter(y, 1000, rate), sps.filtfilt(b, a, ref), rtol=1e-5, atol=1e-5)


def test_median_is_numpys_to_the_bit(real_reads):
    """pp.median (one partition) returns np.median's value and dtype: odd and even lengths, runs of equal
    values, one and two samples, real reads and their absolute deviations."""
    rng = np.random.default_rng(5)
    arrays = [np.array([3.0], np.float32), np.array([1.0, 2.0], np.float32), np.array([2.0, 2.0, 1.0, 1.0], np.float32)]
    for n in (3, 4, 99, 100, 10_001, 10_002):
        arrays += [rng.standard_normal(n).astype(np.float32), rng.integers(-2, 3, n).astype(np.float32),
                   (rng.standard_normal(n) * 1e30).astype(np.float32), rng.standard_normal(n)]
    for pa, _ in real_reads:
        arrays += [pa, pa[1:], np.abs(pa - np.median(pa))]
    for x in arrays:
        got, want = pp.median(x), np.median(x)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (x.size, got, want)


def test_preprocess_order_and_config(real_reads):
    pa, rate = real_reads[0]
    config = pp.PreprocessingConfig(median_kernel=5, lowpass_cutoff_hz=800, sampling_rate=5000)
    b, a = sps.butter(6, 800 / (rate / 2))  # the read's own rate wins over the config's
    expected = sps.filtfilt(b, a, sps.medfilt(spec_normalize(pa), 5))
    np.testing.assert_allclose(pp.preprocess(pa, config, sampling_rate=rate), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pp.preprocess(pa, pp.PreprocessingConfig(normalization="none")), pa)


def _reference_running_median(x, window, positions):
    """Naive reflect-padded running median (upper middle value for even windows) at chosen positions."""
    left = window // 2
    padded = np.pad(x, (left, window - 1 - left), mode="symmetric")
    views = sliding_window_view(padded, window)[positions]
    return np.sort(views, axis=1)[:, window // 2]


@pytest.mark.parametrize("window", [pp.SPIKE_WINDOW, pp.BASELINE_WINDOW])
def test_running_median_matches_naive_reference_on_real_reads(real_reads, window):
    for pa, _ in real_reads:
        y = pp.normalize(pa)
        if y.size < 3 * window:
            continue
        rng = np.random.RandomState(0)
        positions = np.unique(np.r_[np.arange(50), y.size - 50 + np.arange(50), rng.randint(0, y.size, 200)])
        np.testing.assert_array_equal(pp.running_median(y, window)[positions],
                                      _reference_running_median(y, window, positions))


@pytest.mark.parametrize("length", [1, 2, 7, 100, 2500, 4999, 5000, 5001, 12000])
def test_running_median_edge_lengths_match_generic_filter(length):
    """Reads shorter than the window: SciPy's repeated reflection, checked by an independent rank selection."""
    x = np.random.RandomState(length).randn(length).astype(np.float32)
    for window in (pp.SPIKE_WINDOW, pp.BASELINE_WINDOW):
        if length > 2600:
            positions = np.r_[0:20, length - 20:length]
            ref = _reference_running_median(x, window, positions)
            np.testing.assert_array_equal(pp.running_median(x, window)[positions], ref)
        else:
            ref = ndimage.generic_filter(x.astype(np.float64), lambda v: np.sort(v)[window // 2],
                                         size=window, mode="reflect")
            np.testing.assert_array_equal(pp.running_median(x, window), ref.astype(np.float32))


def test_kmeans_chain_equals_spec_loop(real_reads):
    rng = np.random.RandomState(7)
    spiky = (rng.randn(30000) * 3 + 90).astype(np.float32)
    spiky[rng.randint(0, 30000, 300)] += 200
    spiky[:3] = 900  # spikes at the very start take the running median's first value
    spiky[1000:1004] = [400, -300, 500, 450]  # a run inside takes the sample before it, as does a run at the end
    spiky[-2:] = 700
    cases = [pa for pa, _ in real_reads] + [spiky, rng.randn(3000).astype(np.float32), rng.randn(20).astype(np.float32)]
    for pa in cases:
        y = spec_normalize(pa)
        despiked = spec_spike_removal(y)
        np.testing.assert_array_equal(pp.remove_spikes(y), despiked)
        expected = sps.medfilt(spec_baseline_removal(despiked), kernel_size=5).astype(np.float32)
        np.testing.assert_array_equal(pp.kmeans_chain(pa), expected)
    assert not np.array_equal(pp.remove_spikes(spec_normalize(spiky)), spec_normalize(spiky))


def test_constant_nan_and_bad_inputs():
    with pytest.raises(ConstantSignalError, match="constant"):
        pp.normalize(np.full(100, 80.0, np.float32))
    with pytest.raises(ConstantSignalError):
        pp.kmeans_chain(np.full(6000, 80.0, np.float32))
    bad = np.ones(50, np.float32)
    bad[3] = np.nan
    with pytest.raises(InvalidSignalError, match="1 NaN/inf"):
        pp.preprocess(bad)
    with pytest.raises(InvalidSignalError, match="1-D"):
        pp.normalize(np.ones((2, 5)))
    with pytest.raises(InvalidSignalError, match="too short"):
        pp.lowpass_filter(np.arange(10, dtype=np.float32), 1000, 5000)
    with pytest.raises(ValueError, match="Nyquist"):
        pp.lowpass_filter(np.arange(100, dtype=np.float32), 3000, 5000)
    with pytest.raises(ValueError, match="odd"):
        pp.PreprocessingConfig(median_kernel=4)
    with pytest.raises(ValueError, match="normalization must be one of"):
        pp.PreprocessingConfig(normalization="zscore")
    assert pp.normalize(np.array([], np.float32)).size == 0


def test_config_json_round_trip(tmp_path):
    config = pp.PreprocessingConfig(median_kernel=5, lowpass_cutoff_hz=1000.0, sampling_rate=4000.0)
    path = tmp_path / "preprocessor_config.json"
    config.save(path)
    data = json.loads(path.read_text())
    assert data["preprocessor_type"] == "NstSignalPreprocessor" and data["median_kernel"] == 5
    assert pp.PreprocessingConfig.load(path) == config
    with pytest.raises(ValueError, match="unknown preprocessing fields"):
        pp.PreprocessingConfig.from_dict({"medf": 5})


def test_compiled_running_median_equals_scipy_everywhere(real_reads, monkeypatch, native_median):
    """nst_hf._rank_filter (split over threads for long reads) returns exactly SciPy's values."""
    from scipy import ndimage

    from nst_hf import _rank_filter

    monkeypatch.delenv("NST_HF_DISABLE_NATIVE_MEDIAN", raising=False)
    assert pp._native_median_enabled()
    rng = np.random.default_rng(3)
    signals = [rng.standard_normal(300_001).astype(np.float32),              # split over threads
               rng.integers(-5, 5, 150_000).astype(np.float32),              # many ties
               rng.standard_normal(5000).astype(np.float32),                 # exactly one window
               *[pp.normalize(signal) for signal, _ in real_reads[:4]]]
    for x in signals:
        for window in (1, 2, 5, 5000, 5001):
            if x.size >= window:
                np.testing.assert_array_equal(pp.running_median(x, window),
                                              ndimage.median_filter(x, size=window, mode="reflect"))
    with pytest.raises(ValueError, match="rank < window"):
        _rank_filter.running_rank(signals[0], np.empty(10, np.float32), 5, 5, 0, 5)


def test_rank_filter_histogram_path_and_its_fallback_to_heaps_equal_scipy(real_reads, native_median):
    """Few distinct values take the histogram path; values too scattered for it hand the rest of the range to the
    heaps part-way. Both give SciPy's values exactly, over every window the K-Means chain uses."""
    from scipy import ndimage

    from nst_hf import _rank_filter

    rng = np.random.default_rng(11)
    levels = rng.integers(0, 1000, 60_000).astype(np.float32) / 7            # 1000 values, ties everywhere
    steps = np.repeat(rng.standard_normal(12) * 50, 5000).astype(np.float32)  # the answer jumps between levels
    real = pp.normalize(real_reads[0][0])
    for x in (levels, steps, real):
        for window in (5000, 5001):
            left = window // 2
            padded = np.pad(x, (left, window - 1 - left), mode="symmetric")
            values = np.unique(padded)
            expected = ndimage.median_filter(x, size=window, mode="reflect")
            out = np.empty(x.size, np.float32)
            assert _rank_filter.running_rank_codes(padded, values, out, window, left, 0, x.size, 32) == x.size
            np.testing.assert_array_equal(out, expected)
            out = np.empty(x.size, np.float32)
            switched = _rank_filter.running_rank_codes(padded, values, out, window, left, 0, x.size, 0)
            np.testing.assert_array_equal(out, expected)
            if x is levels:
                assert 0 < switched < x.size  # the fallback ran, part-way
            np.testing.assert_array_equal(pp.running_median(x, window), expected)
    with pytest.raises(ValueError, match="values not empty"):
        _rank_filter.running_rank_codes(levels, levels[:0], np.empty(10, np.float32), 5, 2, 0, 5, 32)


def test_compiled_median_filter_equals_scipy_medfilt(real_reads, monkeypatch, native_median):
    """median_filter runs through nst_hf._rank_filter with zero padding: exactly scipy.signal.medfilt."""
    monkeypatch.delenv("NST_HF_DISABLE_NATIVE_MEDIAN", raising=False)
    assert pp._native_median_enabled()
    rng = np.random.default_rng(5)
    signals = [rng.standard_normal(250_001).astype(np.float32) + 3,          # split over threads
               rng.integers(-3, 3, 40_000).astype(np.float32),               # many ties, zeros among them
               *[rng.standard_normal(n).astype(np.float32) for n in (1, 2, 4, 5, 6)],  # shorter than a window
               *[pp.normalize(signal) for signal, _ in real_reads[:3]]]
    for x in signals:
        for kernel in (1, 3, 5, 7, 101):
            np.testing.assert_array_equal(pp.median_filter(x, kernel), sps.medfilt(x, kernel_size=kernel))


def test_the_kmeans_chain_refuses_fields_it_would_ignore():
    from nst_hf.preprocessing import PreprocessingConfig

    assert PreprocessingConfig(kmeans_chain=True, sampling_rate=5000).kmeans_chain
    for field in ({"median_kernel": 101}, {"normalization": "none"}, {"lowpass_cutoff_hz": 10.0}, {"filter_order": 4}):
        with pytest.raises(ValueError, match=f"{next(iter(field))}=.*would be ignored"):
            PreprocessingConfig(kmeans_chain=True, **field)
