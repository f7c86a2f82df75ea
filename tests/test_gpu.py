"""VQ and RVQ tokenizers give the same tokens on CUDA as on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.gpu
def test_cuda_tokens_equal_cpu_tokens(request):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import nst_hf

    vq1, rvq, checkpoints = (request.getfixturevalue(name) for name in ("vq1", "rvq", "checkpoints"))

    rng = np.random.default_rng(2024)
    # pA-like reads: a few levels of ~90 pA with noise; lengths cover one window, several, and a ragged tail
    signals = [np.repeat(rng.normal(90, 12, size=n // 40 + 1), 40)[:n].astype(np.float32)
               + rng.normal(0, 3, size=n).astype(np.float32) for n in (40, 1_003, 7_345, 13_007)]
    cases = [  # both ways onto the GPU: the constructor's device argument and .to()
        (vq1, lambda: nst_hf.NstVQTokenizer.from_pretrained(checkpoints / "vq_cnn1_cb8192.pth", device="cuda"),
         "vq_cnn1_cb8192", None),
        (rvq, lambda: nst_hf.NstRVQTokenizer.from_pretrained(checkpoints / "rvq_nq4_cb1024.pth").to("cuda"),
         "rvq_nq4_cb1024", "L4"),
    ]
    for cpu, load_on_cuda, name, token_type in cases:
        assert cpu.device.type == "cpu"
        gpu = load_on_cuda()
        assert gpu.device.type == "cuda"
        assert all(p.device.type == "cuda" for p in gpu.model.parameters())
        assert gpu.model.codebooks.device.type == "cuda"
        expected = cpu.encode_signals_to_codes(signals, token_type=token_type)
        got = gpu.encode_signals_to_codes(signals, token_type=token_type)
        for index, (a, b) in enumerate(zip(expected, got)):
            assert a.shape == b.shape and a.shape[0] > 0, (name, index)
            assert np.array_equal(a, b), (f"{name} read {index}: {int((a != b).any(axis=1).sum())} of "
                                          f"{a.shape[0]} frames differ between CPU and CUDA")
        assert cpu.signal_to_text(signals[2], token_type=token_type) == gpu.signal_to_text(signals[2],
                                                                                           token_type=token_type)
