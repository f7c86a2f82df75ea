"""One process, many files: the reads of all files go through the tokenizer as one stream (batches span
files), and each file still gets its own part, its own counts and its own skipped reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import nst_hf
from nst_hf.errors import InvalidReadError
from nst_hf.io.writers import write_pod5
from nst_hf.pipeline import tokenize_inputs
from nst_hf.pipeline.parts import tokenize_parts
from nst_hf.simulate import simulate_reads


@pytest.fixture(scope="module")
def default():
    return nst_hf.load_tokenizer("default")


def _folder(folder: Path, rates: list[float], reads: int = 2) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, rate in enumerate(rates):
        path = folder / f"f{i}.pod5"
        write_pod5(path, simulate_reads(num_reads=reads, min_samples=3000, max_samples=6000, sampling_rate=rate,
                                        seed=i))
        paths.append(path)
    return paths


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_small_files_share_encoder_batches_and_give_the_same_rows_as_each_file_alone(tmp_path, default,
                                                                                      monkeypatch):
    files = _folder(tmp_path / "run", [5000.0] * 6)
    calls = []
    encode = default._encode_preprocessed
    monkeypatch.setattr(default, "_encode_preprocessed", lambda signals, levels: calls.append(len(signals))
                        or encode(signals, levels))
    summary = tokenize_inputs([tmp_path / "run"], tmp_path / "tokens.jsonl", tokenizer=default, progress=False)
    assert summary.reads == 12 and calls == [12]  # one batch for the 12 reads of 6 files, not one per file
    monkeypatch.undo()
    alone = []
    for i, path in enumerate(files):
        nst_hf.tokenize_file(default, path, tmp_path / f"alone{i}.jsonl")
        alone += _rows(tmp_path / f"alone{i}.jsonl")
    assert _rows(tmp_path / "tokens.jsonl") == alone


def test_each_part_counts_its_own_reads_and_skips(tmp_path, default):
    files = _folder(tmp_path / "run", [5000.0, 4000.0, 5000.0])
    broken = tmp_path / "run" / "f1b.pod5"
    broken.write_bytes(b"\0" * 4096)
    files.insert(2, broken)
    done = []
    tokenize_parts(default, [str(f) for f in files], [str(tmp_path / f"part{i}") for i in range(4)], "jsonl", None,
                   "skip", False, 1_000_000, False, False, on_done=lambda file, result: done.append((file, result)))
    assert [file for file, _ in done] == [str(f) for f in files]  # in file order, every file, the broken one too
    results = [result for _, result in done]
    assert [r["reads"] for r in results] == [2, 0, 0, 2]
    assert [len(r["skipped"]) for r in results] == [0, 2, 1, 0]
    assert all(s["file"] == str(files[1]) and "4000 Hz" in s["reason"] for s in results[1]["skipped"])
    assert results[2]["skipped"][0]["file"] == str(broken) and results[2]["skipped"][0]["read_id"] is None
    for i, result in enumerate(results):
        assert len(_rows(tmp_path / f"part{i}")) == result["reads"]


def test_a_run_stopped_by_a_bad_read_keeps_the_files_before_it(tmp_path, default):
    """The 4 kHz read of the third file is an error without resampling. The reads of the first two files were
    in the same batch: their parts are written before the error is raised, so a resume keeps them."""
    files = _folder(tmp_path / "run", [5000.0, 5000.0, 4000.0])
    out = tmp_path / "tokens.jsonl"
    with pytest.raises(InvalidReadError, match="4000 Hz"):
        tokenize_inputs([tmp_path / "run"], out, tokenizer=default, progress=False)
    manifest = json.loads((tmp_path / "tokens.jsonl.parts" / "manifest.json").read_text())
    assert len(manifest["parts"]) == 2
    files[2].unlink()
    summary = tokenize_inputs([tmp_path / "run"], out, tokenizer=default, progress=False, resume=True)
    assert summary.files_resumed == 2 and summary.reads == 4 and len(_rows(out)) == 4


def test_the_reads_before_a_bad_one_are_yielded_before_the_error(default):
    reads = simulate_reads(num_reads=3, min_samples=3000, max_samples=4000, seed=1)
    reads[2] = simulate_reads(num_reads=1, min_samples=3000, max_samples=4000, sampling_rate=4000.0, seed=2)[0]
    seen = []
    with pytest.raises(InvalidReadError, match="4000 Hz"):
        for record, codes, _ in default.iter_tokenized(reads):
            seen.append((record.read_id, codes.shape[0]))
    assert [read_id for read_id, _ in seen] == [reads[0].read_id, reads[1].read_id] and all(n > 0 for _, n in seen)
