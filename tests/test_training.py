"""Training (VQ, RVQ, K-Means), evaluation figures with known answers, and LM integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

import nst_hf
from nst_hf.evaluate import code_statistics, evaluate_tokenizer
from nst_hf.training import KMeansTrainingConfig, VQTrainingConfig, train_kmeans, train_vq
from nst_hf.training.kmeans import WindowReservoir

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "sample.pod5"


def _config(tmp_path, **overrides):
    values = dict(inputs=[str(SAMPLE)], output_dir=str(tmp_path / "vq"), architecture="vq_cnn1", codebook_size=32,
                  steps=40, batch_size=8, chunk_length=600, log_every=5, checkpoint_every=20, seed=3)
    values.update(overrides)
    return VQTrainingConfig(**values)


def test_train_vq_loss_goes_down_and_saves_a_loadable_tokenizer(tmp_path):
    tok = train_vq(_config(tmp_path), progress=False)
    history = tok.training_info["history"]
    assert history[-1]["recon"] < 0.6 * history[0]["recon"]
    loaded = AutoTokenizer.from_pretrained(tmp_path / "vq")
    assert type(loaded) is nst_hf.NstVQTokenizer and loaded.sampling_rate == 5000 and len(loaded) == 36
    record = next(iter(nst_hf.open_reads(SAMPLE)))
    assert loaded.tokenize_read(record) == tok.tokenize_read(record)
    card = (tmp_path / "vq" / "README.md").read_text()
    assert "40 steps of batch 8 x 600 samples on 8 reads" in card


def test_exported_codebook_matches_the_trained_quantizer(tmp_path):
    """Tokens from the saved tokenizer are the trained VectorQuantize's own choices (eval mode)."""
    from nst_hf.training.vq import _Autoencoder

    config = _config(tmp_path, steps=25)
    tok = train_vq(config, progress=False)
    network = _Autoencoder(config, distributed=False)
    checkpoint = torch.load(tmp_path / "vq" / "training_checkpoint.pt", weights_only=True)
    network.load_state_dict(checkpoint["network"])
    network.eval()
    signal = tok.preprocess_signal(next(iter(nst_hf.open_reads(SAMPLE))).signal_pa)[:6000]
    with torch.inference_mode():
        _, indices, _ = network(torch.from_numpy(signal)[None, None])
    ours = np.array(tok.encode_signals_to_codes([signal], do_normalize=False)[0][:, 0])
    theirs = indices[0].numpy()
    assert (ours[20:-20] == theirs[20:-20]).mean() >= 0.999  # edges: the library saw no trailing zeros


def test_resume_after_interruption_continues_exactly(tmp_path, monkeypatch):
    from nst_hf.training import data

    uninterrupted = train_vq(_config(tmp_path, output_dir=str(tmp_path / "a"), steps=30, checkpoint_every=10),
                             progress=False)
    original = data.ChunkSampler.sample
    calls = {"n": 0}

    def crash_at_step_25(self, batch_size):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch_size)

    monkeypatch.setattr(data.ChunkSampler, "sample", crash_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        train_vq(_config(tmp_path, output_dir=str(tmp_path / "b"), steps=30, checkpoint_every=10), progress=False)
    assert int(torch.load(tmp_path / "b" / "training_checkpoint.pt", weights_only=True)["step"]) == 20
    assert not (tmp_path / "b" / "tokenizer_config.json").exists()
    monkeypatch.setattr(data.ChunkSampler, "sample", original)
    resumed = train_vq(_config(tmp_path, output_dir=str(tmp_path / "b"), steps=30, checkpoint_every=10, resume=True),
                       progress=False)
    for key, value in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    assert [h["recon"] for h in resumed.training_info["history"]] == \
        [h["recon"] for h in uninterrupted.training_info["history"]]


def test_train_rvq_levels(tmp_path):
    tok = train_vq(_config(tmp_path, architecture="rvq", num_quantizers=2, codebook_size=16, steps=10,
                           chunk_length=1200), progress=False)
    assert isinstance(tok, nst_hf.NstRVQTokenizer) and tok.num_quantizers == 2 and len(tok) == 36
    record = next(iter(nst_hf.open_reads(SAMPLE)))
    assert len(tok.tokenize_read(record, token_type="L2")) == 2 * -(-record.num_samples // 12)


def test_train_cli_and_kmeans(tmp_path):
    from nst_hf.cli import main

    assert main(["train", "kmeans", str(SAMPLE), "-o", str(tmp_path / "km"), "--num-codes", "16", "--window", "8",
                 "--stride", "4", "--max-windows", "5000", "--iterations", "5"]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "km")
    info = json.loads((tmp_path / "km" / "bwav_training.json").read_text())
    assert info["windows_used"] == 5000 and info["windows_seen"] > 30000 and info["command"].startswith("nst-hf train")
    assert isinstance(tok, nst_hf.NstKMeansTokenizer) and tok.stride == 4 and tok.dimension == 8
    codes = tok.encode_signal(next(iter(nst_hf.open_reads(SAMPLE))).signal_pa)
    assert len(set(codes)) >= 12  # a trained codebook is used
    with pytest.raises(ValueError, match="only 100 windows for 200 centroids"):
        train_kmeans(KMeansTrainingConfig(inputs=[str(SAMPLE)], output_dir=str(tmp_path / "x"), num_codes=200,
                                          max_windows=100, window=8))
    with pytest.raises(ValueError, match="faiss's limit"):
        KMeansTrainingConfig(max_windows=2**31)


def test_window_reservoir_is_uniform_and_bounded():
    reservoir = WindowReservoir(capacity=1000, width=1, seed=0)
    stream = np.arange(100_000, dtype=np.float32)[:, None]
    for start in range(0, len(stream), 7919):
        reservoir.add(stream[start:start + 7919])
    sample = reservoir.sample[:, 0]
    assert reservoir.seen == 100_000 and sample.size == 1000 and len(np.unique(sample)) == 1000
    counts, _ = np.histogram(sample, bins=10, range=(0, 100_000))
    assert counts.min() > 60 and counts.max() < 140  # ~100 per decile


def test_code_statistics_known_answers():
    stats = code_statistics(np.array([0, 1, 2, 3] * 25), codebook_size=16)
    assert stats == {"tokens": 100, "codes_used": 4, "codebook_size": 16, "usage": 0.25, "entropy_bits": 2.0,
                     "perplexity": 4.0, "top10_share": 1.0}
    skewed = code_statistics(np.array([5] * 90 + list(range(10, 20))), codebook_size=32)
    assert skewed["codes_used"] == 11 and skewed["top10_share"] == pytest.approx(0.99)


def test_evaluate_uses_exactly_k_codes(tmp_path, kmeans):
    """Centroids = k windows of the read itself plus far-away decoys: exactly k codes are used."""
    record = next(iter(nst_hf.open_reads(SAMPLE)))
    windows = kmeans.windows(kmeans.preprocess_signal(record.signal_pa))
    chosen = windows[np.linspace(0, len(windows) - 1, 7).astype(int)]
    decoys = np.full((9, 32), 1e4, np.float32) + np.arange(9, dtype=np.float32)[:, None]
    tok = nst_hf.NstKMeansTokenizer(centroids=np.concatenate([chosen, decoys]), dimension=32, stride=8)
    level = evaluate_tokenizer(tok, [tmp_path.parent / "nothing"] if False else [SAMPLE], max_reads=1)["levels"]["L1"]
    assert level["codes_used"] == 7 and level["usage"] == pytest.approx(7 / 16)


def test_evaluate_cli_reconstruction_and_plot(tmp_path, checkpoints, capsys):
    from nst_hf.cli import main

    assert main(["evaluate", str(SAMPLE), "--tokenizer", str(checkpoints / "vq_cnn1_cb8192.pth"), "--json",
                 "--plot", str(tmp_path / "read.png"), "--max-reads", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reads"] == 3 and 0 < report["reconstruction"]["mse"] < 1 and report["reconstruction"]["snr_db"] > 0
    assert (tmp_path / "read.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_extend_lm_tokenizer_one_id_per_bwav_token(rvq):
    spec = __import__("importlib").util.spec_from_file_location("tiny_lm", ROOT / "examples" / "train_tiny_lm.py")
    module = __import__("importlib").util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lm_tok = module.build_text_tokenizer()
    before = len(lm_tok)
    assert nst_hf.extend_lm_tokenizer(lm_tok, rvq) == 4096 and len(lm_tok) == before + 4096
    assert nst_hf.extend_lm_tokenizer(lm_tok, rvq) == 0
    text = "read " + "".join(rvq.convert_ids_to_tokens([3, 1024 + 7, 5, 1024 + 9]))
    ids = lm_tok(text, add_special_tokens=False).input_ids
    assert len(ids) == 5 and lm_tok.convert_ids_to_tokens(ids[1:]) == rvq.convert_ids_to_tokens([3, 1031, 5, 1033])
    assert lm_tok.decode(ids).replace(" ", "") == text.replace(" ", "")


def test_tiny_lm_example_trains(vq1):
    spec = __import__("importlib").util.spec_from_file_location("tiny_lm", ROOT / "examples" / "train_tiny_lm.py")
    module = __import__("importlib").util.module_from_spec(spec)
    spec.loader.exec_module(module)
    losses = module.main(steps=6, signal_tokenizer=vq1, max_length=128)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.slow
def test_distributed_training_with_torchrun_on_cpu(tmp_path):
    """Two processes (gloo) train one model with DistributedDataParallel; rank 0 saves it."""
    code = ("import sys\nfrom nst_hf.training import VQTrainingConfig, train_vq\n"
            f"train_vq(VQTrainingConfig(inputs=[{str(SAMPLE)!r}], output_dir=sys.argv[1], codebook_size=16, steps=6, "
            "batch_size=4, chunk_length=600, log_every=2), progress=False)\n")
    script = tmp_path / "ddp.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                             str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "out"), nst_hf.NstVQTokenizer)
