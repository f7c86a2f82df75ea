"""nst_hf.chunking: windows of a read, which frames each window keeps, and that stitching equals one pass."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from nst_hf.chunking import Window, min_margin, num_frames, plan_windows

# Exhaustive small grid plus seeded random larger cases (frames, core, margin).
GRID = [(f, c, m) for c in range(1, 8) for m in range(0, 6) for f in range(1, 4 * (c + 2 * m) + 3)]


def _random_cases(count=400, seed=20240611):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        core = int(rng.integers(1, 600))
        margin = int(rng.integers(0, 40))
        frames = int(rng.integers(1, 8 * (core + 2 * margin)))
        cases.append((frames, core, margin))
    return cases


CASES = GRID + _random_cases()


# ---------------------------------------------------------------- num_frames / min_margin


def test_num_frames_is_the_fewest_frames_that_hold_every_sample():
    for samples, d in itertools.product(range(0, 300), range(1, 14)):
        frames = num_frames(samples, d)
        assert frames * d >= samples, (samples, d)
        assert frames == 0 or (frames - 1) * d < samples, (samples, d)


def test_num_frames_matches_spec_examples_and_stays_exact_for_long_reads():
    assert num_frames(500, 5) == 100      # SPEC §4: 100 tokens x 5 = 500 samples
    assert num_frames(10, 12) == 1        # SPEC §4: RVQ, 10 samples give 1 frame
    assert num_frames(0, 5) == 0
    rng = np.random.default_rng(7)
    for samples in rng.integers(1, 10**12, size=200).tolist():
        for d in (5, 12):
            assert num_frames(samples, d) == -(-samples // d)


def test_min_margin_is_at_least_half_the_receptive_field():
    for field, d in itertools.product(range(1, 300), range(1, 14)):
        assert min_margin(field, d) * d >= field / 2, (field, d)


def test_min_margin_beats_upstreams_two_frame_vq_margin():
    # SPEC §4: upstream's 2-frame VQ margin (10 samples) is less than half the 33-sample receptive field.
    assert min_margin(33, 5) > 2 and min_margin(33, 5) * 5 >= 16.5
    assert min_margin(65, 12) * 12 >= 32.5


# ---------------------------------------------------------------- hand-derived plans


def test_zero_frames_gives_no_windows():
    for core, margin in [(1, 0), (500, 8), (3, 100)]:
        assert plan_windows(0, core, margin) == []


def test_read_shorter_than_one_window_is_one_window_of_the_padded_read():
    # padded = frames + margin <= core + 2 * margin: one window [0, frames + margin), keeping every frame
    assert plan_windows(1, 500, 8) == [Window(0, 9, 0, 1)]
    assert plan_windows(10, 500, 8) == [Window(0, 18, 0, 10)]
    assert plan_windows(508, 500, 8) == [Window(0, 516, 0, 508)]  # frames == core + margin: still one


def test_one_frame_past_a_single_window_splits_into_two_full_windows():
    # 509 frames, padded 517 > width 516: second window is clamped to end at the padded end
    assert plan_windows(509, 500, 8) == [Window(0, 516, 0, 500), Window(1, 517, 500, 509)]


def test_long_read_windows_overlap_by_two_margins_and_the_last_is_clamped():
    assert plan_windows(1000, 500, 8) == [Window(0, 516, 0, 500), Window(492, 1008, 500, 1000)]
    assert plan_windows(1201, 500, 8) == [Window(0, 516, 0, 500), Window(492, 1008, 500, 1000),
                                          Window(693, 1209, 1000, 1201)]


def test_zero_margin_windows_are_disjoint_cores_with_a_shifted_last_window():
    assert plan_windows(10, 3, 0) == [Window(0, 3, 0, 3), Window(3, 6, 3, 6), Window(6, 9, 6, 9),
                                      Window(7, 10, 9, 10)]


def test_window_length_and_immutability():
    window = Window(4, 20, 8, 16)
    assert window.length == 16
    with pytest.raises(dataclasses.FrozenInstanceError):
        window.start = 0  # type: ignore[misc]


# ---------------------------------------------------------------- properties over many lengths


def test_kept_ranges_partition_the_read_and_windows_keep_margin_context():
    for frames, core, margin in CASES:
        windows = plan_windows(frames, core, margin)
        padded, width = frames + margin, core + 2 * margin
        label = (frames, core, margin, windows[:3])
        kept = [f for w in windows for f in range(w.keep_start, w.keep_end)]
        assert kept == list(range(frames)), label  # every frame once, in order
        counts = np.zeros(frames, dtype=int)
        for w in windows:
            counts[w.keep_start:w.keep_end] += 1
            assert 0 <= w.start <= w.keep_start < w.keep_end <= w.end <= padded, label
            # margin frames of context on both sides (or the window touches the read's start)
            assert w.start == 0 or w.keep_start - w.start >= margin, label
            assert w.end - w.keep_end >= margin, label
        assert (counts == 1).all(), label
        assert windows[0].start == 0 and windows[-1].end == padded, label
        if padded <= width:
            assert len(windows) == 1 and windows[0].length == padded, label
        else:
            # fixed-width windows (they stack into one batch), one per core of frames
            assert all(w.length == width for w in windows), label
            assert len(windows) == -(-frames // core), label
            sizes = [w.keep_end - w.keep_start for w in windows]
            assert sizes[:-1] == [core] * (len(windows) - 1), label
            assert sizes[-1] == frames - core * (len(windows) - 1), label
        assert [w.start for w in windows] == sorted(w.start for w in windows), label


def _stencil(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """out[i] = sum_j weights[j] * values[i + j - h] with zeros outside ``values`` (h = len(weights) // 2)."""
    h = len(weights) // 2
    padded = np.concatenate([np.zeros(h, values.dtype), values, np.zeros(h, values.dtype)])
    return sum(weights[j] * padded[j:j + values.size] for j in range(len(weights)))


def test_stitched_local_operator_equals_one_pass_for_random_lengths():
    """An exact integer operator reaching ``margin`` frames each way, windowed and stitched, equals one pass."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        core, margin = int(rng.integers(1, 30)), int(rng.integers(0, 8))
        frames = int(rng.integers(1, 6 * (core + 2 * margin)))
        values = np.concatenate([rng.integers(-1000, 1000, frames), np.zeros(margin, np.int64)])
        weights = rng.integers(1, 50, 2 * margin + 1)
        reference = _stencil(values, weights)[:frames]
        stitched = np.full(frames, np.iinfo(np.int64).min)
        for w in plan_windows(frames, core, margin):
            local = _stencil(values[w.start:w.end], weights)
            stitched[w.keep_start:w.keep_end] = local[w.keep_start - w.start:w.keep_end - w.start]
        np.testing.assert_array_equal(stitched, reference, err_msg=str((frames, core, margin)))


# ---------------------------------------------------------------- with the real encoder geometry


def _random_encoder(architecture: str):
    from nst_hf.models.conv_vq import NstConvVQConfig, NstConvVQModel

    torch.manual_seed(0)
    model = NstConvVQModel(NstConvVQConfig(architecture=architecture, codebook_size=4)).eval()
    for module in model.encoder:
        if isinstance(module, torch.nn.BatchNorm1d):  # non-trivial BN: zero input gives non-zero activations
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("architecture", ["vq_cnn0", "vq_cnn1", "vq_cnn2", "rvq"])
def test_windowed_latents_equal_one_pass_and_do_not_depend_on_core(architecture):
    model = _random_encoder(architecture)
    d, field = model.config.downsample_rate, model.config.receptive_field
    margin = min_margin(field, d)
    rng = np.random.default_rng(5)
    with torch.no_grad():
        for samples in (1, 7 * d + 3, 26 * d - 1):
            signal = rng.normal(size=samples).astype(np.float32)
            frames = num_frames(samples, d)
            padded = np.zeros((frames + margin + 3) * d, dtype=np.float32)
            padded[:samples] = signal
            reference = model.encoder(torch.from_numpy(padded)[None, None])[0, :, :frames].numpy()
            for core in (2, 9):
                windows = plan_windows(frames, core, margin)
                pieces = np.stack([padded[w.start * d:w.end * d] for w in windows])  # equal widths: one batch
                latents = model.encoder(torch.from_numpy(pieces)[:, None]).numpy()
                assert latents.shape[2] == windows[0].length
                stitched = np.full_like(reference, np.nan)
                for w, latent in zip(windows, latents):
                    stitched[:, w.keep_start:w.keep_end] = latent[:, w.keep_start - w.start:w.keep_end - w.start]
                np.testing.assert_allclose(stitched, reference, rtol=0, atol=1e-4,
                                           err_msg=f"{architecture} samples={samples} core={core}")


def test_tokenizer_margins_cover_the_spec_receptive_fields():
    from nst_hf.models.conv_vq import NstConvVQConfig

    # SPEC §4: receptive field 33 samples for cnn_type 0/1, 65 for cnn_type 2 and RVQ; d = 5 or 12
    for architecture, field, d in [("vq_cnn0", 33, 5), ("vq_cnn1", 33, 5), ("vq_cnn2", 65, 12), ("rvq", 65, 12)]:
        config = NstConvVQConfig(architecture=architecture)
        assert (config.receptive_field, config.downsample_rate) == (field, d)
        assert min_margin(config.receptive_field, d) * d >= field / 2


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("core, margin, word", [(0, 2, "core"), (-5, 2, "core"), (10, -1, "margin")])
def test_bad_core_or_margin_raises_value_error_naming_it(core, margin, word):
    with pytest.raises(ValueError, match=word):
        plan_windows(100, core, margin)
    with pytest.raises(ValueError, match=word):
        plan_windows(0, core, margin)  # checked before the empty-read shortcut


def test_negative_or_zero_sizes_raise_value_error():
    with pytest.raises(ValueError, match="frames"):
        plan_windows(-3, 10, 2)
    with pytest.raises(ValueError, match="num_samples"):
        num_frames(-5, 5)
    with pytest.raises(ValueError, match="downsample_rate"):
        num_frames(5, 0)
    with pytest.raises(ValueError, match="downsample_rate"):
        min_margin(33, 0)
