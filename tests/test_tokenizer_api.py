"""The tokenizers behave like Hugging Face tokenizers on text and like signal tokenizers on arrays."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

import nst_hf
from nst_hf.errors import InvalidReadError, InvalidSignalError


@pytest.fixture(scope="module")
def signal(demo_reads):
    return demo_reads[1].signal_pa


@pytest.mark.parametrize("fixture", ["vq1", "rvq", "kmeans"])
def test_text_round_trip_and_vocab(request, fixture, signal):
    tok = request.getfixturevalue(fixture)
    text = tok.signal_to_text(signal, token_type="L3" if tok.is_rvq else None)
    ids = tok(text).input_ids
    assert ids == tok.encode_signal(signal, token_type="L3" if tok.is_rvq else None)
    assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(ids[:3]) == tok.tokenize_data(signal, token_type="L3" if tok.is_rvq else None)[:3]
    base = tok.codebook_size * tok.num_quantizers
    assert tok.vocab_size == base and len(tok) == base + 4
    assert [tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id] == [base, base + 1, base + 2, base + 3]
    if not tok.is_rvq:
        assert tok.convert_tokens_to_ids(["<|bwav:0|>", "<|bwav:17|>"]) == [0, 17]  # id == code
    else:
        assert tok.convert_tokens_to_ids(["<|bwav:L1_5|>", "<|bwav:L2_5|>"]) == [5, tok.codebook_size + 5]


def test_text_that_is_not_tokens_is_unk_not_characters(vq1):
    ids = vq1("hello <|bwav:5|> world <|bwav:99999|>").input_ids
    assert ids == [vq1.unk_token_id, 5, vq1.unk_token_id, vq1.unk_token_id]
    assert vq1("<|bwav:1|> <|bwav:2|>\n<|bwav:3|>").input_ids == [1, 2, 3]
    vq1_copy = nst_hf.NstVQTokenizer(model=vq1.model, preprocessing=vq1.preprocessing)
    vq1_copy.add_tokens(["<|read_start|>"])
    assert vq1_copy.convert_tokens_to_ids("<|read_start|>") == len(vq1) and len(vq1_copy) == len(vq1) + 1


def test_call_with_signals_pads_and_returns_tensors(vq1, signal):
    batch = vq1(signals=[signal[:1000], signal[:5003]], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 1001) and isinstance(batch["input_ids"], torch.Tensor)
    assert batch["attention_mask"][0].sum() == 200 and batch["attention_mask"][1].sum() == 1001
    assert (batch["input_ids"][0, 200:] == vq1.pad_token_id).all()
    single = vq1(signals=signal[:1000], return_tensors="np")
    # as for text: one input with return_tensors gets a batch axis of 1
    assert single["input_ids"].shape == (1, 200) and single["input_ids"][0].tolist() == vq1.encode_signal(signal[:1000])
    assert vq1(signals=torch.from_numpy(signal[:1000]))["input_ids"] == single["input_ids"][0].tolist()
    with pytest.raises(ValueError, match="either text or signals"):
        vq1("x", signals=signal)


def test_preprocessing_overrides_sampling_rate_and_bad_input(vq1, rvq, signal):
    assert vq1.tokenize_data(signal, medf=5) != vq1.tokenize_data(signal)
    assert vq1.tokenize_data(signal, medf=5) == vq1.tokenize_data(nst_hf.preprocess(
        signal, nst_hf.PreprocessingConfig(median_kernel=5)), do_normalize=False)
    assert vq1.tokenize_data(np.full(500, 90.0, np.float32)) == []  # constant signal: no tokens
    assert vq1.tokenize_data(signal[:24]) == [] and len(vq1.tokenize_data(signal[:25])) == 5
    assert len(rvq.tokenize_data(signal[:10])) == 1  # RVQ has no minimum
    bad = signal[:100].copy()
    bad[5] = np.nan
    with pytest.raises(InvalidSignalError, match="NaN"):
        vq1.tokenize_data(bad)
    with pytest.raises(ValueError, match=r"token_type must be one of \['L1', 'L2', 'L3', 'L4'\]"):
        rvq.tokenize_data(signal, token_type="L5")
    with pytest.raises(ValueError, match=r"token_type must be one of \['L1'\]"):
        vq1.tokenize_data(signal, token_type="L2")
    rated = nst_hf.NstVQTokenizer(model=vq1.model, preprocessing=nst_hf.PreprocessingConfig(sampling_rate=5000))
    with pytest.raises(InvalidSignalError, match="sampled at 4000 Hz but this tokenizer was trained at 5000 Hz.*"
                                                 r"resample=True \(on the command line: --resample\)"):
        rated.tokenize_data(signal, sampling_rate=4000)
    resampled = rated.tokenize_data(signal, sampling_rate=4000, resample=True)
    assert len(resampled) == -(-round(signal.size * 5000 / 4000) // 5)


def test_rvq_levels_and_text_layout(rvq, signal):
    l1, l2 = rvq.tokenize_data(signal, token_type="L1"), rvq.tokenize_data(signal, token_type="L2")
    assert rvq.tokenize_data(signal) == l1  # upstream's default: L1
    assert l2[0::2] == l1 and all(t.startswith("<|bwav:L2_") for t in l2[1::2])


def test_tokenize_file_all_formats_and_skip(vq1, real_dir, tmp_path):
    source = real_dir / "slow5-pod5-bench/pod5/compat"
    outputs = {}
    for name in ("file.fast5", "v3.pod5"):
        summary = nst_hf.tokenize_file(vq1, source / name, tmp_path / f"{name}.jsonl.gz")
        with gzip.open(tmp_path / f"{name}.jsonl.gz", "rt") as handle:
            outputs[name] = {row["id"]: row["text"] for row in map(json.loads, handle)}
        assert summary.reads == 4 and summary.tokens == sum(t.count("<|") for t in outputs[name].values())
    assert outputs["file.fast5"] == outputs["v3.pod5"]
    blow5 = real_dir / "slow5-pod5-bench/slow5/compat/0.2.0.blow5"
    vq1.tokenize_fast5(blow5, tmp_path / "b.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert {r["id"]: r["text"] for r in rows} == outputs["v3.pod5"]
    for record in nst_hf.open_reads(blow5):
        assert "".join(vq1.tokenize_read(record)) == outputs["v3.pod5"][record.read_id]


def test_tokenize_file_reports_bad_reads(vq1, tmp_path):
    from nst_hf.io.writers import write_fast5
    from nst_hf.simulate import simulate_reads

    records = simulate_reads(num_reads=3, min_samples=3000, max_samples=3000, seed=3)
    flat = nst_hf.SignalRecord(read_id="flat", signal=np.full(3000, 500, np.int16), sampling_rate=5000.0,
                               offset=0.0, range=1500.0, digitisation=8192.0)
    path = write_fast5(tmp_path / "mixed.fast5", [records[0], flat, records[1]])
    rated = nst_hf.NstVQTokenizer(model=vq1.model, preprocessing=nst_hf.PreprocessingConfig(sampling_rate=4000))
    with pytest.raises(InvalidReadError, match="mixed.fast5: read .*: signal sampled at 5000 Hz"):
        nst_hf.tokenize_file(rated, path, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()  # nothing half-written
    summary = nst_hf.tokenize_file(rated, path, tmp_path / "out.jsonl", on_error="skip")
    assert summary.reads == 0 and len(summary.skipped) == 3
    summary = nst_hf.tokenize_file(vq1, path, tmp_path / "out.jsonl", on_error="skip")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    texts = {r["id"]: r["text"] for r in rows}  # FAST5 lists reads in name order
    assert set(texts) == {records[0].read_id, records[1].read_id} and all(texts.values())
    # a constant read has no tokens: it is not an empty row but a skipped read with its reason
    assert [(s.read_id, "constant" in s.reason) for s in summary.skipped] == [("flat", True)]


@pytest.mark.parametrize("fixture", ["vq1", "rvq"])
def test_decode_to_signal_reconstructs(request, fixture, signal):
    tok = request.getfixturevalue(fixture)
    text = tok.signal_to_text(signal, token_type="L4" if tok.is_rvq else None)
    recon = tok.decode_to_signal(text)
    target = tok.preprocess_signal(signal)
    frames = -(-target.size // tok.samples_per_token)
    assert recon.shape == (frames * tok.samples_per_token,)
    np.testing.assert_array_equal(recon, tok.decode_to_signal(tok(text).input_ids))
    corr = np.corrcoef(recon[:target.size], target)[0, 1]
    assert corr > 0.6, corr


def test_reads_preprocessed_on_threads_keep_order_and_errors(kmeans, demo_reads):
    """Several reads are preprocessed at once on threads: codes, order and each read's error stay its own."""
    bad = nst_hf.SignalRecord(read_id="bad", signal=np.zeros(4000, np.int16), sampling_rate=4000.0,
                              offset=float("nan"), range=1500.0, digitisation=8192.0)
    uncalibrated = nst_hf.SignalRecord(read_id="uncalibrated", signal=demo_reads[0].signal[:4000], sampling_rate=4000.0,
                                       offset=None, range=None, digitisation=None)
    records = [demo_reads[1], bad, demo_reads[2], uncalibrated, demo_reads[3]]
    good = [r for r in records if r not in (bad, uncalibrated)]
    one_by_one = [kmeans.encode_signals_to_codes([r.signal_pa], r.sampling_rate)[0] for r in good]
    out = list(kmeans.iter_tokenized(records, on_error="skip"))
    assert [r.read_id for r, _, _ in out] == [r.read_id for r in records]
    assert out[1][1] is None and "NaN" in out[1][2]
    assert out[3][1] is None and "calibration" in out[3][2]
    with pytest.raises(InvalidReadError, match="read uncalibrated"):
        list(kmeans.iter_tokenized(records[2:], on_error="raise"))
    for expected, (_, codes, error) in zip(one_by_one, [out[0], out[2], out[4]]):
        assert error is None
        np.testing.assert_array_equal(codes, expected)
    together = kmeans.encode_signals_to_codes([r.signal_pa for r in good], 4000.0)
    for expected, codes in zip(one_by_one, together):
        np.testing.assert_array_equal(codes, expected)
    with pytest.raises(InvalidSignalError):
        kmeans.encode_signals_to_codes([demo_reads[1].signal_pa, bad.signal_pa], 4000.0)
