"""The folded, channels-last inference encoder against the plain layers and a float64 evaluation.

Folding BatchNorm and other kernels change the latents' last bits, so tokens may differ from the plain
encoder's only where two codes are within that rounding of each other (proven per frame in float64),
and agree with a float64 evaluation of the same encoder on ≥ 99.999 % of the demo reads' tokens.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import nst_hf
from nst_hf.chunking import plan_windows
from nst_hf.models import fast_encoder
from nst_hf.models.fast_encoder import LAYER_FORMS_KNOWN, PLAIN_ENCODER_ENV, FastEncoder

POD5_READS = ["test_datasets/pod5/PAM14583_ee1ba89e_88.pod5", "blue-crab/test/data/raw/p2s/pod5/b/b1.pod5"]
FIXTURES = ["vq_cnn0_cb1024", "vq_cnn1_cb8192", "vq_cnn2_cb1024", "rvq_nq4_cb1024"]
#: Stated bound on either fp32 encoder's error: |x_fp32 − x_f64|₂ ≤ LATENT_ERROR · (|x_f64|₂ + 1) per frame.
LATENT_ERROR = 1e-5


def _load(spec, checkpoints):
    if spec == "default":
        return nst_hf.load_tokenizer("default")
    cls = nst_hf.NstRVQTokenizer if spec.startswith("rvq") else nst_hf.NstVQTokenizer
    return cls.from_pretrained(checkpoints / f"{spec}.pth")


@pytest.fixture(scope="module", params=["default", *FIXTURES])
def neural(request, checkpoints):
    return _load(request.param, checkpoints)


@pytest.fixture(scope="module")
def real_pa(demo_reads, real_dir):
    """pA signals of real reads: the demo reads and two POD5 files, cut to 20,000 samples each."""
    signals = [(r.signal_pa[:20000], r.sampling_rate) for r in demo_reads]
    for rel in POD5_READS:
        with nst_hf.open_reads(real_dir / rel) as source:
            signals += [(r.signal_pa[:20000], r.sampling_rate) for r in source][:2]
    return signals


def _preprocessed(tok, signals):
    return [tok.preprocess_signal(s, rate, resample=True) for s, rate in signals]


def _padded(tok, y):
    d = tok.samples_per_token
    frames = -(-y.size // d)
    padded = np.zeros((frames + tok.margin_frames) * d, np.float32)
    padded[:y.size] = y
    return torch.from_numpy(padded)[None, None], frames


def _codes(tok, ys, fast, levels):
    tok.fast_encoder = fast
    try:
        return tok.encode_preprocessed(ys, token_type=f"L{levels}" if tok.is_rvq else None)
    finally:
        tok.fast_encoder = True


def _float64_latents(tok, y):
    """``[T, D]`` float64 latents of one whole-read pass, and the two fp32 encoders' latents of the same pass."""
    x, frames = _padded(tok, y)
    model64 = copy.deepcopy(tok.model).double()
    with torch.inference_mode():
        exact = model64.encode_latent(x.double())[0, :, :frames].T
        fast = tok.model.encode_frames(x, fast=True)[0, :frames].double()
        plain = tok.model.encode_latent(x)[0, :, :frames].T.double()
    return exact, fast, plain


def _assert_near_tie(tok, exact, frame, a_codes, b_codes):
    """The first level where the two code paths differ is a near-tie of the float64 residual: each fp32
    choice is the nearest code to a latent within ``e`` of the exact one, so their float64 distances
    differ by at most ``2e``."""
    codebooks = tok.model.codebooks.double()
    residual = exact[frame].clone()
    spent = 0.0
    for level, (a, b) in enumerate(zip(a_codes, b_codes)):
        if a != b:
            bound = LATENT_ERROR * (float(exact[frame].norm()) + spent + 1.0)
            gap = abs(float((residual - codebooks[level, a]).norm() - (residual - codebooks[level, b]).norm()))
            assert gap <= 2 * bound, f"frame {frame} level {level + 1}: codes {a}/{b} differ by {gap:.3g} > 2·{bound:.3g}"
            return
        residual -= codebooks[level, a]
        spent += float(codebooks[level, a].norm())


def test_fast_encoder_agrees_with_the_plain_layers_on_real_reads(neural, real_pa):
    """Token for token on real reads, except frames proven to be float64 near-ties."""
    levels = neural.num_quantizers
    ys = _preprocessed(neural, real_pa)
    fast, plain = _codes(neural, ys, True, levels), _codes(neural, ys, False, levels)
    frames = differing = 0
    for y, a, b in zip(ys, fast, plain):
        assert a.shape == b.shape and a.shape[0] > 0
        frames += a.shape[0]
        rows = np.flatnonzero((a != b).any(axis=1))
        differing += rows.size
        if rows.size:
            exact, fast_latent, plain_latent = _float64_latents(neural, y)
            limit = LATENT_ERROR * (exact.norm(dim=1) + 1.0)
            assert bool(((fast_latent - exact).norm(dim=1) <= limit).all())  # the bound holds on this read
            assert bool(((plain_latent - exact).norm(dim=1) <= limit).all())
            for row in rows:
                _assert_near_tie(neural, exact, int(row), a[row], b[row])
    assert differing <= 1e-4 * frames, f"{differing} of {frames} frames differ"


def test_fast_and_plain_latents_are_within_the_stated_bound(neural, real_pa):
    """Both fp32 encoders stay within LATENT_ERROR of float64 on every frame of three real reads."""
    worst = {"fast": 0.0, "plain": 0.0}
    for y in _preprocessed(neural, real_pa[:1] + real_pa[-2:]):
        exact, fast, plain = _float64_latents(neural, y)
        scale = exact.norm(dim=1) + 1.0
        worst["fast"] = max(worst["fast"], float(((fast - exact).norm(dim=1) / scale).max()))
        worst["plain"] = max(worst["plain"], float(((plain - exact).norm(dim=1) / scale).max()))
    assert worst["fast"] <= LATENT_ERROR and worst["plain"] <= LATENT_ERROR, worst


def _exact_codes(model64, latent, levels):
    codes, residual = [], latent
    for level in range(levels):
        codebook = model64.codebooks[level]
        best = ((codebook * codebook).sum(1)[None] - 2.0 * residual @ codebook.T).argmin(1)
        codes.append(best)
        residual = residual - codebook[best]
    return torch.stack(codes, 1).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("spec,levels", [("vq_cnn1_cb8192", 1), ("rvq_nq4_cb1024", 4), ("default", 1)])
def test_tokens_agree_with_a_float64_evaluation_of_the_encoder(checkpoints, demo_reads, spec, levels):
    """≥ 99.999 % of the demo reads' tokens equal a float64 whole-read evaluation (encoder and search)."""
    tok = _load(spec, checkpoints)
    ys = [tok.preprocess_signal(r.signal_pa, r.sampling_rate, resample=True) for r in demo_reads]
    got = np.concatenate(_codes(tok, ys, True, levels))
    model64 = copy.deepcopy(tok.model).double()
    exact = []
    with torch.inference_mode():
        for y in ys:
            x, frames = _padded(tok, y)
            exact.append(_exact_codes(model64, model64.encode_latent(x.double())[0, :, :frames].T, levels))
    exact = np.concatenate(exact)
    assert got.shape == exact.shape
    agreement = float((got == exact).mean())
    assert agreement >= 0.99999, f"{spec}: {agreement:.7f} of {exact.size} tokens agree with float64"


def test_fast_encoder_leaves_the_weights_alone_and_follows_their_changes(checkpoints, tmp_path):
    from safetensors.torch import load_file

    tok = _load("default", checkpoints)
    before = {k: v.clone() for k, v in tok.model.state_dict().items()}
    x = torch.randn(2, 1, 3000, generator=torch.Generator().manual_seed(1)) * 2
    with torch.inference_mode():
        fast = tok.model.encode_frames(x)
    assert all(torch.equal(before[k], v) for k, v in tok.model.state_dict().items())
    tok.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "bwav_tokenizer.safetensors")
    assert set(saved) == set(before) and all(torch.equal(saved[k], before[k]) for k in before)
    with torch.no_grad():
        tok.model.encoder[0].weight.mul_(2.0)  # an in-place edit (as training makes) must reach the fast form
    with torch.inference_mode():
        changed, plain = tok.model.encode_frames(x), tok.model.encode_latent(x).transpose(1, 2)
    assert not torch.allclose(changed, fast)
    torch.testing.assert_close(changed, plain, rtol=1e-4, atol=1e-4)


def test_training_and_gradients_use_the_plain_layers(checkpoints):
    tok = _load("rvq_nq4_cb1024", checkpoints)
    x = torch.randn(2, 1, 600, generator=torch.Generator().manual_seed(2))
    latent = tok.model.encode_frames(x)  # gradients on: the plain layers, differentiable
    latent.sum().backward()
    assert tok.model.encoder[0].weight.grad is not None
    with torch.inference_mode():
        assert torch.equal(tok.model.encode_frames(x, fast=False), tok.model.encode_latent(x).transpose(1, 2))


def test_plain_encoder_switches(checkpoints, monkeypatch, real_pa):
    """``NST_HF_PLAIN_ENCODER=1`` and ``tokenizer.fast_encoder = False`` both run the plain layers."""
    tok = _load("default", checkpoints)
    x, _ = _padded(tok, _preprocessed(tok, real_pa[:1])[0][:5000])
    with torch.inference_mode():
        plain = tok.model.encode_latent(x).transpose(1, 2)
        assert not torch.equal(tok.model.encode_frames(x), plain)  # the fast form rounds differently
        monkeypatch.setenv(PLAIN_ENCODER_ENV, "1")
        assert torch.equal(tok.model.encode_frames(x), plain)
        monkeypatch.delenv(PLAIN_ENCODER_ENV)
        tok.fast_encoder = False
        frames = x.shape[-1] // tok.samples_per_token - tok.margin_frames
        (window,) = plan_windows(frames, 10_000, tok.margin_frames)
        pair = tok.model.encode_latent(torch.cat([x, x])).transpose(1, 2)  # a lone window runs as two copies
        assert torch.equal(tok._latent_vectors([(0, window, x[0, 0].numpy())]), pair[0, :frames])


def test_fast_encoder_latents_do_not_depend_on_the_batch(neural, real_pa):
    """Bit for bit: a window's latents in a batch of two, three or five, on one torch thread as the tokenizer
    runs it on CPU. (A batch of one may run other kernels, as for torch's own layers; the tokenizer encodes a
    lone window as two copies. With several threads in one call, torch's convolutions split the work by batch
    size and, on some CPUs such as AMD Zen 3 with AVX2, round differently.)"""
    ys = _preprocessed(neural, real_pa[:5])
    width = (neural.window_frames + 2 * neural.margin_frames) * neural.samples_per_token
    batch = torch.from_numpy(np.stack([np.resize(y, width) for y in ys]))[:, None]
    encoder = neural.model.fast_encoder()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            together = encoder(batch)
            for size in (2, 3):
                assert torch.equal(encoder(batch[:size]), together[:size])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("form", LAYER_FORMS_KNOWN)
def test_every_layer_form_stays_within_the_bound_on_every_architecture(neural, real_pa, form):
    """Each layer form, used for every layer of the encoder, gives latents within the stated bound of a
    float64 evaluation on a real read (the forms in LAYER_FORMS mix them per layer)."""
    y = _preprocessed(neural, real_pa[-1:])[0]
    x, frames = _padded(neural, y)
    order = "conv_act_bn" if neural.is_rvq else "conv_bn_act"
    layers = sum(isinstance(m, torch.nn.Conv1d) for m in neural.model.encoder)
    encoder = FastEncoder.from_encoder(neural.model.encoder, order, (form,) * layers)
    with torch.inference_mode():
        exact = copy.deepcopy(neural.model).double().encode_latent(x.double())[0, :, :frames].T
        latent = encoder(x)[0, :frames].double()
    assert latent.shape == exact.shape
    assert bool(((latent - exact).norm(dim=1) <= LATENT_ERROR * (exact.norm(dim=1) + 1.0)).all())


@pytest.fixture(params=["compiled", "blas"])
def gemm_kernel(request, monkeypatch):
    """The "gemm" form run by the compiled register-tiled kernel (where this CPU has AVX-512F) or by BLAS."""
    if request.param == "compiled" and not fast_encoder._CONV_ROWS_AVAILABLE:
        pytest.skip("the compiled conv_rows kernel needs AVX-512F, which this CPU or build lacks")
    if request.param == "blas":
        monkeypatch.setattr(fast_encoder, "_CONV_ROWS_AVAILABLE", False)
    return request.param


@pytest.mark.parametrize("batch,length,in_channels,out_channels,kernel,stride,padding", [
    (2, 12900, 32, 64, 25, 5, 12),  # the default tokenizer's last layer
    (3, 137, 32, 64, 25, 5, 12),    # short windows: most frames read the padding
    (1, 7, 32, 64, 25, 5, 12),      # shorter than the kernel
    (2, 301, 16, 128, 9, 3, 4),     # two column blocks, a stride that does not divide the kernel
    (5, 50, 1, 64, 5, 1, 2),        # one input channel, stride 1
])
def test_gemm_form_matches_a_float64_convolution(gemm_kernel, batch, length, in_channels, out_channels, kernel,
                                                 stride, padding):
    """Either implementation of the "gemm" form: the convolution's values within fp32 rounding of float64,
    at every frame including those whose taps read the zero padding."""
    torch.manual_seed(length)
    conv = torch.nn.Conv1d(in_channels, out_channels, kernel, stride, padding)
    layer = fast_encoder._layer(conv.weight.detach().double(), conv.bias.detach().double(), conv, False, "gemm")
    rows = torch.randn(batch, length, in_channels)
    with torch.inference_mode():
        exact = F.conv1d(rows.double().transpose(1, 2), conv.weight.double(), conv.bias.double(), stride, padding)
        got = fast_encoder._register_tiled_conv(rows, layer) if gemm_kernel == "compiled" \
            else fast_encoder._shifted_gemm(rows, layer)
    exact = exact.transpose(1, 2)
    assert got.shape == exact.shape
    scale = F.conv1d(rows.double().abs().transpose(1, 2), conv.weight.double().abs(), conv.bias.double().abs(),
                     stride, padding).transpose(1, 2)  # sum of |terms|: the fp32 error is a small multiple of it
    assert bool(((got.double() - exact).abs() <= 1e-6 * in_channels * kernel * scale + 1e-30).all())


def test_compiled_gemm_form_agrees_with_blas_on_real_reads(real_pa):
    """The default tokenizer's encoder gives the same latents on real reads through either implementation of
    its last layer (same block products, same order of sums)."""
    if not fast_encoder._CONV_ROWS_AVAILABLE:
        pytest.skip("the compiled conv_rows kernel needs AVX-512F, which this CPU or build lacks")
    tok = nst_hf.load_tokenizer("default")
    ys = _preprocessed(tok, real_pa[:3])
    signal = torch.from_numpy(np.stack([y[:6000] for y in ys]))[:, None]
    encoder = tok.model.fast_encoder()
    with torch.inference_mode():
        got = encoder(signal)
        fast_encoder._CONV_ROWS_AVAILABLE = False
        try:
            reference = encoder(signal)
        finally:
            fast_encoder._CONV_ROWS_AVAILABLE = True
    assert torch.allclose(got, reference, rtol=1e-5, atol=1e-5)


def test_conv_rows_refuses_bad_shapes():
    if not fast_encoder._CONV_ROWS_AVAILABLE:
        pytest.skip("the compiled conv_rows kernel needs AVX-512F, which this CPU or build lacks")
    from nst_hf.models import _conv_rows

    rows, weight = np.zeros((1, 10, 4), np.float32), np.zeros((2, 8, 48), np.float32)
    bias, out = np.zeros(48, np.float32), np.zeros((1, 5, 48), np.float32)
    with pytest.raises(ValueError, match="multiple of 64"):
        _conv_rows.conv_rows(rows, weight, bias, out, 1, 10, 4, 2, 1, 2, 5, 48, 0, 5)
    with pytest.raises(ValueError, match="out must be"):
        _conv_rows.conv_rows(rows, np.zeros((2, 8, 64), np.float32), np.zeros(64, np.float32), out, 1, 10, 4, 2,
                             1, 2, 5, 64, 0, 5)


def test_fold_refuses_other_layers():
    encoder = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU())
    with pytest.raises(ValueError, match="cannot fold encoder module"):
        FastEncoder.from_encoder(encoder, "conv_act_bn")
    with pytest.raises(ValueError, match="unknown encoder order"):
        FastEncoder.from_encoder(torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3)), "conv_relu")


def test_parallel_workers_give_the_same_tokens_and_restore_torch_threads(neural, real_pa):
    """Batches shared among worker threads (one torch thread each) give the tokens of one worker, and the caller's torch thread count is unchanged afterwards."""
    ys = _preprocessed(neural, real_pa)
    token_type = f"L{neural.num_quantizers}" if neural.is_rvq else None
    threads = torch.get_num_threads()
    neural.encode_workers = 1
    try:
        one = neural.encode_preprocessed(ys, token_type=token_type)
        for workers in (2, 3):
            neural.encode_workers = workers
            for a, b in zip(neural.encode_preprocessed(ys, token_type=token_type), one):
                np.testing.assert_array_equal(a, b)
            assert torch.get_num_threads() == threads
    finally:
        neural.encode_workers = None


def test_stage_times_add_up_to_the_call_with_parallel_workers(checkpoints, real_pa):
    import time

    tok = _load("default", checkpoints)
    ys = _preprocessed(tok, real_pa) * 3
    tok.encode_workers = 2
    tok.stage_seconds = {}
    start = time.perf_counter()
    tok.encode_preprocessed(ys)
    wall = time.perf_counter() - start
    stages, tok.stage_seconds = tok.stage_seconds, None
    assert set(stages) == {"encoder", "search"} and sum(stages.values()) <= 1.05 * wall


def test_a_reads_latents_do_not_depend_on_what_else_is_tokenized(neural, real_pa, monkeypatch):
    """The latent rows the search gets for a read are bit for bit the same whether the read is tokenized alone
    (one batch, on one worker) or among others (batches shared by worker threads). On some CPUs
    (AMD Zen 3, AVX2) torch's convolutions give batch-dependent last bits when one call uses several threads."""
    ys = _preprocessed(neural, real_pa[:5])
    width = (neural.window_frames + 2 * neural.margin_frames) * neural.samples_per_token
    alone = np.resize(ys[0], 3 * neural.window_frames * neural.samples_per_token)  # three windows: one batch
    seen: list[torch.Tensor] = []
    quantize = neural.model.quantize
    monkeypatch.setattr(neural.model, "quantize", lambda vectors, levels: (seen.append(vectors.clone()),
                                                                           quantize(vectors, levels))[1])
    token_type = f"L{neural.num_quantizers}" if neural.is_rvq else None
    batch_windows = neural.batch_windows
    neural.batch_windows = 3
    try:
        neural.encode_preprocessed([alone], token_type=token_type)
        by_itself = torch.cat(seen)
        seen.clear()
        others = [np.resize(y, 2 * width) for y in ys[1:]]
        neural.encode_preprocessed([alone, *others], token_type=token_type)
    finally:
        neural.batch_windows = batch_windows
    among = torch.cat(seen)
    rows = by_itself.shape[0]
    assert any(torch.equal(among[start:start + rows], by_itself) for start in range(0, among.shape[0] - rows + 1))
