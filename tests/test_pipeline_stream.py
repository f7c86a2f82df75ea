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


def test_a_file_with_a_bad_read_is_not_kept_when_the_next_file_is_unreadable_too(tmp_path, default):
    """The reader fails on the second file while the first file's reads still wait in the batch; then the
    first file's middle read is an error. The first file is not complete, so no part of it may be kept."""
    (tmp_path / "run").mkdir()
    reads = simulate_reads(num_reads=3, min_samples=3000, max_samples=4000, seed=1)
    reads[1] = simulate_reads(num_reads=1, min_samples=3000, max_samples=4000, sampling_rate=4000.0, seed=5)[0]
    write_pod5(tmp_path / "run" / "a.pod5", reads)
    (tmp_path / "run" / "b.pod5").write_bytes(b"\0" * 4096)
    with pytest.raises(InvalidReadError, match="4000 Hz"):
        tokenize_inputs([tmp_path / "run"], tmp_path / "tokens.jsonl", tokenizer=default, progress=False)
    assert not (tmp_path / "tokens.jsonl.parts").exists()  # nothing recorded as done: a resume redoes a.pod5


def test_a_failed_write_of_a_files_last_read_does_not_finish_its_part(tmp_path, default, monkeypatch):
    from nst_hf.pipeline import parts as parts_module

    files = _folder(tmp_path / "run", [5000.0, 5000.0])
    last = [record.read_id for record in nst_hf.open_reads(files[0])][-1]
    write = parts_module.write_outcome

    def failing(tokenizer, record, *args, **kwargs):
        if record.read_id == last:
            raise OSError(28, "No space left on device")
        return write(tokenizer, record, *args, **kwargs)

    monkeypatch.setattr(parts_module, "write_outcome", failing)
    done, parts = [], [str(tmp_path / "part0"), str(tmp_path / "part1")]
    with pytest.raises(OSError, match="No space"):
        tokenize_parts(default, [str(f) for f in files], parts, "jsonl", None, "raise", False, 1_000_000, False,
                       False, on_done=lambda file, result: done.append(file))
    assert done == [] and not Path(parts[0]).exists()


def test_a_part_whose_recording_fails_is_not_finished_again(tmp_path, default):
    files = _folder(tmp_path / "run", [5000.0, 5000.0])
    calls, parts = [], [str(tmp_path / "part0"), str(tmp_path / "part1")]

    def on_done(file, result):
        calls.append(file)
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        tokenize_parts(default, [str(f) for f in files], parts, "jsonl", None, "raise", False, 1_000_000, False,
                       False, on_done=on_done)
    assert calls == [str(files[0])]  # once: not again with an empty part in place of the written one
    assert len(_rows(Path(parts[0]))) == 2 and not Path(parts[1]).exists()
