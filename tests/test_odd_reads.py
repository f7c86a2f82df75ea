"""Reads of 0, 1, 24/25/26 samples, constant and NaN reads: an error or a short result, never a crash,
for each kind of tokenizer, in memory and through a whole run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import nst_hf
from nst_hf.errors import InvalidSignalError
from nst_hf.io.writers import write_fast5
from nst_hf.models.conv_vq import NstConvVQConfig, NstConvVQModel
from nst_hf.pipeline import tokenize_inputs
from nst_hf.simulate import simulate_reads


def _rvq():
    torch.manual_seed(0)
    model = NstConvVQModel(NstConvVQConfig("rvq", 16, 2))
    model.codebooks.normal_()
    return nst_hf.NstRVQTokenizer(model=model, preprocessing=nst_hf.PreprocessingConfig(sampling_rate=5000))


def _kmeans():
    centroids = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    return nst_hf.NstKMeansTokenizer(centroids=centroids, dimension=32, stride=8,
                                     preprocessing=nst_hf.PreprocessingConfig(kmeans_chain=True, sampling_rate=5000))


@pytest.fixture(scope="module")
def tokenizers():
    return {"vq": nst_hf.load_tokenizer("default"), "rvq": _rvq(), "kmeans": _kmeans()}


def expected_tokens(kind: str, length: int) -> int:
    """Tokens of a non-constant signal of ``length`` samples, as SPEC'd per kind."""
    if kind == "vq":
        return -(-length // 5) if length >= 25 else 0
    if kind == "rvq":
        return -(-length // 12)
    return (length - 32) // 8 + 1 if length >= 32 else 0


@pytest.mark.parametrize("kind", ["vq", "rvq", "kmeans"])
def test_short_constant_and_nan_signals(tokenizers, kind):
    tok = tokenizers[kind]
    rng = np.random.default_rng(1)
    for length in (0, 1, 2, 11, 12, 13, 24, 25, 26, 31, 32, 33, 40):
        signal = (rng.normal(size=length) * 10 + 90).astype(np.float32)
        expected = 0 if length < 2 else expected_tokens(kind, length)  # one sample is a constant signal
        assert len(tok.encode_signal(signal, sampling_rate=5000)) == expected, (kind, length)
    assert tok.encode_signal(np.full(1000, 87.5, np.float32)) == []
    for bad in (np.full(100, np.nan, np.float32), np.r_[np.ones(50, np.float32), np.inf]):
        with pytest.raises(InvalidSignalError):
            tok.encode_signal(bad)


@pytest.mark.parametrize("kind", ["vq", "rvq", "kmeans"])
def test_odd_reads_in_a_run_are_written_or_reported(tokenizers, kind, tmp_path):
    good = simulate_reads(num_reads=1, min_samples=400, max_samples=400, seed=3)[0]
    odd = {"empty": good.signal[:0], "one": good.signal[:1], "s24": good.signal[:24], "s25": good.signal[:25],
           "s26": good.signal[:26], "flat": np.full(500, 480, np.int16)}
    records = [good] + [dataclasses.replace(good, read_id=name, signal=signal) for name, signal in odd.items()]
    records.append(dataclasses.replace(good, read_id="nan_offset", offset=float("nan")))
    path = write_fast5(tmp_path / "in" / "odd.fast5", records, compression="gzip")
    out = tmp_path / "out.jsonl"
    summary = tokenize_inputs([path], out, tokenizer=tokenizers[kind], on_error="skip", progress=False)
    rows = {json.loads(line)["id"]: json.loads(line)["text"] for line in out.read_text().splitlines()}
    skipped = {s.read_id: s.reason for s in summary.skipped}
    assert set(rows) | set(skipped) == {r.read_id for r in records} and not set(rows) & set(skipped)
    for record in records:
        if record.read_id in rows:
            assert rows[record.read_id].count("<|bwav:") == expected_tokens(kind, record.num_samples) > 0
    assert "empty signal" in skipped["empty"] and "non-finite calibration" in skipped["nan_offset"]
    assert "constant" in skipped["flat"] or "too short" in skipped["flat"]
    with pytest.raises(nst_hf.errors.InvalidReadError, match="empty signal"):
        tokenize_inputs([path], tmp_path / "strict.jsonl", tokenizer=tokenizers[kind], progress=False)
