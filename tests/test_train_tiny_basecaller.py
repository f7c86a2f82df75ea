"""examples/train_tiny_basecaller.py (issue 12): a tiny decoder-only LM learns bases from bwav tokens on the
shared paired reads, and its loss on whole held-out reads goes down."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from conftest import _require

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("train_tiny_basecaller", ROOT / "examples" / "train_tiny_basecaller.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lm_rows_have_loss_on_the_bases_only(tiny_vq):
    example = _example()
    lm_tok = example.build_lm_tokenizer()
    assert example.extend_lm_tokenizer(lm_tok, tiny_vq) == 64
    batch = {"text": ["<|bwav:7|><|bwav:63|><|bwav:7|>", "<|bwav:0|>"], "bases": ["GATTACA", "T"]}
    rows = example.to_lm_example(batch, lm_tok)
    ids, labels = rows["input_ids"][0], rows["labels"][0]
    assert len(ids) == 1 + 3 + 1 + 7 + 1
    assert lm_tok.convert_ids_to_tokens(ids) == ["<s>", "<|bwav:7|>", "<|bwav:63|>", "<|bwav:7|>", "<sep>",
                                                 *"GATTACA", "</s>"]
    assert labels == [-100] * 5 + ids[5:]
    assert rows["labels"][1] == [-100] * 3 + lm_tok.convert_tokens_to_ids(["T", "</s>"])
    wrong = example.with_wrong_signal([{"input_ids": ids, "labels": labels},
                                       {"input_ids": rows["input_ids"][1], "labels": rows["labels"][1]}])
    assert lm_tok.convert_ids_to_tokens(wrong[0]["input_ids"]) == ["<s>", "<|bwav:0|>", "<sep>", *"GATTACA", "</s>"]
    assert wrong[0]["labels"] == [-100] * 3 + labels[5:]


@pytest.mark.slow
def test_tiny_basecaller_loss_goes_down_on_held_out_reads(shared_dir, tmp_path):
    import nst_hf

    example = _example()
    _require(example.PAIRED)  # skips, or fails under CI, without ../shared/data/paired
    with nst_hf.open_basecalls(example.BASECALLS) as calls:  # the 10 shortest reads keep tokenizing cheap
        read_ids = sorted(calls, key=lambda read_id: (calls[read_id].num_samples, read_id))[:10]
    result = example.main(steps=60, chunk_size=800, batch_size=8, seed=0, read_ids=read_ids, heldout=2,
                          cache_dir=str(tmp_path / "cache"), quiet=True)

    assert result["train_reads"] == 8 and len(result["heldout_reads"]) == 2 and result["heldout_chunks"] > 50
    assert not set(result["heldout_reads"]) & set(sorted(read_ids)[:8])
    losses = result["train_losses"]
    assert len(losses) == 60 and all(math.isfinite(x) for x in losses)
    start, end = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert start > 6.0  # ~ln(vocabulary) = ln(1033) = 6.94 before training
    assert end < 0.3 * start
    assert result["heldout_loss_start"] > 6.0
    assert result["heldout_loss_end"] < result["heldout_loss_start"] - 4.0
    # below what knowing the base frequencies alone gives (the targets' unigram entropy, 1.405 nats here) and
    # below ln 4: the model has learned more than the base composition. Seeds 0-2 end at 1.30-1.34 (by
    # 60 steps; it is still ~1.5-1.9 at step 20). Not asserted: that it reads the signal (see the README).
    assert result["heldout_loss_end"] < result["unigram_entropy"]
    assert result["heldout_loss_end"] < math.log(4)
