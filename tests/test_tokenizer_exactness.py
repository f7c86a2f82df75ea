"""Tokens of a read never depend on the window size, the batch size or the other reads in the batch,
and equal one pass of the encoder over the whole read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nst_hf

READS = ["test_datasets/pod5/PAM14583_ee1ba89e_88.pod5", "blue-crab/test/data/raw/p2s/pod5/b/b1.pod5"]


@pytest.fixture(scope="module")
def real_signals(real_dir):
    signals = []
    for rel in READS:
        with nst_hf.open_reads(real_dir / rel) as source:
            signals += [r.signal_pa[:30000] for r in source][:3]
    signals.append(signals[0][:31])      # shorter than a window and than the receptive field
    signals.append(signals[1][:5000])
    return signals


def _one_pass_codes(tok, signal, levels):
    y = tok.preprocess_signal(signal)
    if y.size < max(tok.min_samples, 1):
        return np.zeros((0, levels), np.int64)
    d = tok.samples_per_token
    frames = -(-y.size // d)
    padded = np.zeros((frames + tok.margin_frames) * d, np.float32)  # the read followed by zeros
    padded[:y.size] = y
    with torch.inference_mode():  # the encoder the tokenizer runs (the fast form unless switched off)
        latent = tok.model.encode_frames(torch.from_numpy(padded)[None, None], fast=tok.fast_encoder)
        return tok.model.quantize(latent[0, :frames].contiguous(), levels).numpy()


@pytest.fixture(scope="module", params=["vq_cnn0_cb1024", "vq_cnn1_cb8192", "vq_cnn2_cb1024", "rvq_nq4_cb1024"])
def neural(request, checkpoints):
    cls = nst_hf.NstRVQTokenizer if request.param.startswith("rvq") else nst_hf.NstVQTokenizer
    return cls.from_pretrained(checkpoints / f"{request.param}.pth")


def test_neural_tokens_independent_of_windows_and_batches(neural, real_signals):
    levels = neural.num_quantizers
    token_type = f"L{levels}" if neural.is_rvq else None
    reference = [_one_pass_codes(neural, s, levels) for s in real_signals]
    defaults = neural.window_frames, neural.batch_windows
    for window_frames, batch_windows in [(37, 1), (2000, 64)]:
        neural.window_frames, neural.batch_windows = window_frames, batch_windows
        together = neural.encode_signals_to_codes(real_signals, token_type=token_type)
        alone = [neural.encode_signals_to_codes([s], token_type=token_type)[0] for s in real_signals[::-1]][::-1]
        for ref, a, b in zip(reference, together, alone):
            np.testing.assert_array_equal(a, ref)
            np.testing.assert_array_equal(b, ref)
    neural.window_frames, neural.batch_windows = defaults
    neural.fast_encoder = False  # the plain layers are batch- and window-independent in the same way
    try:
        plain_reference = [_one_pass_codes(neural, s, levels) for s in real_signals]
        for window_frames, batch_windows in [(37, 1), (2000, 64)]:
            neural.window_frames, neural.batch_windows = window_frames, batch_windows
            for ref, got in zip(plain_reference, neural.encode_signals_to_codes(real_signals, token_type=token_type)):
                np.testing.assert_array_equal(got, ref)
    finally:
        neural.fast_encoder = True
        neural.window_frames, neural.batch_windows = defaults
    assert reference[0].shape[0] == -(-30000 // neural.samples_per_token)
    assert all(not (c == 0).all() for c in reference[:3])


def test_kmeans_tokens_independent_of_batch(kmeans, real_signals):
    together = kmeans.encode_signals_to_codes(real_signals)
    for signal, codes in zip(real_signals, together):
        np.testing.assert_array_equal(kmeans.encode_signals_to_codes([signal])[0], codes)
        windows = kmeans.windows(kmeans.preprocess_signal(signal)).astype(np.float64)
        if len(windows):  # brute-force nearest centroid in float64 on a sample of windows
            rows = np.linspace(0, len(windows) - 1, 25).astype(int)
            dist = ((windows[rows, None, :] - kmeans.centroids[None].astype(np.float64)) ** 2).sum(-1)
            np.testing.assert_array_equal(codes[rows, 0], dist.argmin(1))


def test_nearest_codes_exact_with_planted_ties():
    from nst_hf.quantizers.nearest import decide_exactly, nearest_codes

    generator = torch.Generator().manual_seed(0)
    codebook = torch.randn(300, 16, generator=generator)
    codebook[7] = codebook[3]  # duplicate code: ties must go to the lower index
    x = torch.randn(2000, 16, generator=generator)
    x[:20] = codebook[3]
    x[20:40] = (codebook[10] + codebook[11]) / 2
    got = nearest_codes(x, codebook)
    np.testing.assert_array_equal(got.numpy(), decide_exactly(x.numpy(), codebook.numpy()))
    assert (got[:20] == 3).all()
    for block_rows in (1, 7, 4096):
        np.testing.assert_array_equal(nearest_codes(x, codebook, block_rows=block_rows).numpy(), got.numpy())


def test_kmeans_faiss_search_equals_the_exact_torch_search(kmeans, real_signals):
    """faiss k=2 + near-tie check and the torch matmul search are independent paths to the same exact answer."""
    from nst_hf.quantizers.nearest import nearest_codes

    windows = np.ascontiguousarray(np.concatenate([kmeans.windows(kmeans.preprocess_signal(s)) for s in real_signals]))
    ours = np.concatenate(kmeans.encode_preprocessed([kmeans.preprocess_signal(s) for s in real_signals]))[:, 0]
    exact = nearest_codes(torch.from_numpy(windows), torch.from_numpy(kmeans.centroids)).numpy()
    np.testing.assert_array_equal(ours, exact)


def test_inference_encoder_is_bit_identical_to_the_layers(neural, real_signals):
    """The inference path (SiLU in place) gives exactly the latents of the plain ``nn.Sequential``."""
    generator = torch.Generator().manual_seed(0)
    real = torch.from_numpy(np.stack([neural.preprocess_signal(s)[:6000] for s in real_signals[:3]]))[:, None]
    with torch.inference_mode():
        for x in (real, real[1:2], torch.randn(2, 1, 997, generator=generator) * 3):
            assert torch.equal(neural.model.encode_latent(x), neural.model.encoder(x))


def test_a_window_alone_gets_the_latents_it_gets_beside_another(neural, real_signals):
    """A window encoded alone gets latents bit-identical to the same window's next to another read.

    On some CPUs torch computes a batch of one window with other conv kernels than a batch of several;
    nst_hf therefore never encodes a window alone (it encodes two copies)."""
    from nst_hf.chunking import plan_windows

    d, width = neural.samples_per_token, neural.window_frames + 2 * neural.margin_frames
    group = []
    for index, signal in enumerate(real_signals[:2]):
        y = neural.preprocess_signal(signal)
        window = plan_windows(-(-y.size // d), neural.window_frames, neural.margin_frames)[0]
        assert window.length == width
        group.append((index, window, y[window.start * d:window.end * d]))
    with torch.inference_mode():
        together = neural._latent_vectors(group)
        alone = torch.cat([neural._latent_vectors([item]) for item in group])
        assert torch.equal(alone, together)


def test_batches_keep_order_and_never_end_with_a_lone_window():
    from nst_hf.tokenizers.neural import _batches

    for count in range(12):
        for size in (1, 2, 3, 4):
            batches = _batches(list(range(count)), size)
            assert [item for batch in batches for item in batch] == list(range(count))
            assert all(len(batch) <= size + 1 for batch in batches)
            if count > 1 and size > 1:
                assert all(len(batch) > 1 for batch in batches), (count, size, batches)
