"""datasets.map batch function, reads_to_dataset, and the nst-hf tokenize pipeline (resume, workers, formats)."""

from __future__ import annotations

import gzip
import json
import os
import signal as signals
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nst_hf
from nst_hf.hf_datasets import reads_to_dataset, tokenize_batch
from nst_hf.output import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
GROUP_B = "slow5-pod5-bench"


@pytest.fixture(scope="module")
def dataset(real_dir, tmp_path_factory):
    return reads_to_dataset(real_dir / GROUP_B, cache_dir=str(tmp_path_factory.mktemp("hf_cache")))


def test_reads_to_dataset_columns_and_dtypes(dataset, real_dir):
    assert dataset.num_rows == 20 and dataset.column_names == ["read_id", "signal", "offset", "range", "digitisation",
                                                               "sampling_rate", "source_file"]
    assert dataset.features["signal"].feature.dtype == "int16"
    first = dataset.with_format("numpy")[0]
    record = next(r for r in nst_hf.open_reads(first["source_file"]) if r.read_id == first["read_id"])
    np.testing.assert_array_equal(first["signal"], record.signal)
    again = reads_to_dataset(real_dir / GROUP_B, cache_dir=str(Path(dataset.cache_files[0]["filename"]).parents[3]))
    assert again._fingerprint == dataset._fingerprint


def test_tokenize_batch_matches_tokenize_file(dataset, vq1, real_dir, tmp_path):
    out = dataset.with_format("numpy").map(tokenize_batch, batched=True, batch_size=7, fn_kwargs={"tokenizer": vq1},
                                           remove_columns=dataset.column_names, load_from_cache_file=False)
    assert out.column_names == ["id", "text"] and out.num_rows == dataset.num_rows
    expected = {}
    for name in os.listdir(real_dir / GROUP_B / "pod5" / "compat"):
        nst_hf.tokenize_file(vq1, real_dir / GROUP_B / "pod5" / "compat" / name, tmp_path / "x.jsonl")
        expected.update({row["id"]: row["text"] for row in read_jsonl(tmp_path / "x.jsonl")})
    for row in out:
        assert row["text"] == expected[row["id"]]
    with_ids = tokenize_batch(dataset[:2], vq1, return_ids=True)
    assert with_ids["input_ids"][0] == vq1(with_ids["text"][0]).input_ids


@pytest.mark.slow
def test_tokenize_batch_num_proc_and_fingerprint(dataset, kmeans, vq1, upstream_dir):
    kmeans.encode_signal(np.random.RandomState(0).randn(5000).astype(np.float32))  # faiss/torch used in the parent
    kwargs = dict(batched=True, batch_size=5, remove_columns=dataset.column_names)
    single = dataset.map(tokenize_batch, fn_kwargs={"tokenizer": kmeans}, load_from_cache_file=False, **kwargs)
    started = time.time()
    multi = dataset.map(tokenize_batch, fn_kwargs={"tokenizer": kmeans}, num_proc=2, load_from_cache_file=False, **kwargs)
    assert time.time() - started < 120  # no fork-after-OpenMP deadlock
    assert list(multi["text"]) == list(single["text"])
    other = dataset.map(tokenize_batch, fn_kwargs={"tokenizer": vq1}, **kwargs)
    reloaded = nst_hf.NstKMeansTokenizer.from_pretrained(upstream_dir / "centroids.npy", stride=8)  # never used
    same = dataset.map(tokenize_batch, fn_kwargs={"tokenizer": reloaded}, **kwargs)
    changed = dataset.map(tokenize_batch, fn_kwargs={"tokenizer": kmeans, "token_type": "L1"}, **kwargs)
    assert same._fingerprint == single._fingerprint != other._fingerprint
    assert changed._fingerprint != single._fingerprint


@pytest.mark.slow
def test_fingerprint_is_stable_across_processes(dataset, tmp_path, checkpoints):
    code = ("import sys, nst_hf\nfrom datasets.fingerprint import Hasher\n"
            f"tok = nst_hf.NstVQTokenizer.from_pretrained({str(checkpoints / 'vq_cnn0_cb1024.pth')!r})\n"
            "print(Hasher.hash(tok))\n")
    hashes = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout.strip()
              for _ in range(2)}
    assert len(hashes) == 1


def test_tokenize_batch_skip_gives_error_column(vq1):
    batch = {"read_id": ["good", "nan"], "signal_pa": [np.random.RandomState(1).randn(500).astype(np.float32) + 90,
                                                      np.full(500, np.nan, np.float32)],
             "sampling_rate": [4000.0, 4000.0]}
    out = tokenize_batch(batch, vq1, on_error="skip")
    assert out["id"] == ["good", "nan"] and out["text"][0].startswith("<|bwav:") and out["text"][1] == ""
    assert out["error"][0] == "" and "NaN" in out["error"][1]
    with pytest.raises(nst_hf.errors.InvalidReadError, match="read nan"):
        tokenize_batch(batch, vq1)


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "nst_hf", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kwargs)


@pytest.mark.slow
def test_cli_tokenize_formats_and_report(real_dir, tmp_path, checkpoints, vq1):
    tok = checkpoints / "vq_cnn1_cb8192.pth"
    source = real_dir / GROUP_B
    result = _cli("tokenize", source, "-o", tmp_path / "out.jsonl.gz", "--tokenizer", tok)
    assert result.returncode == 0, result.stderr
    assert "20 reads tokenized" in result.stdout
    rows = read_jsonl(tmp_path / "out.jsonl.gz")
    report = json.loads((tmp_path / "out.jsonl.gz.report.json").read_text())
    assert len(rows) == 20 and report["reads"] == 20 and report["skipped"] == []
    assert report["tokens"] == sum(r["text"].count("<|") for r in rows)
    result = _cli("tokenize", source, "-o", tmp_path / "out.parquet", "--tokenizer", tok, "--workers", "2")
    assert result.returncode == 0, result.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == rows  # same rows, same order
    result = _cli("tokenize", source, "-o", tmp_path / "ds", "--tokenizer", tok, "--format", "dataset")
    from datasets import load_from_disk

    assert result.returncode == 0 and load_from_disk(str(tmp_path / "ds"))["text"] == [r["text"] for r in rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.jsonl.gz", "out.jsonl.gz.report.json", "out.parquet", "out.parquet.report.json", "ds", "ds.report.json"])


@pytest.mark.slow
def test_cli_tokenize_skip_report(tmp_path, checkpoints):
    from nst_hf.io.writers import write_fast5
    from nst_hf.simulate import simulate_reads

    records = simulate_reads(num_reads=2, min_samples=2000, max_samples=2000, seed=5)
    write_fast5(tmp_path / "in" / "a.fast5" if (tmp_path / "in").mkdir() is None else None, records)
    (tmp_path / "in" / "broken.pod5").write_bytes(b"\0" * 4096)
    result = _cli("tokenize", tmp_path / "in", "-o", tmp_path / "out.jsonl", "--tokenizer",
                  checkpoints / "vq_cnn1_cb8192.pth")
    assert result.returncode == 1 and "broken.pod5" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()
    result = _cli("tokenize", tmp_path / "in", "-o", tmp_path / "out.jsonl", "--tokenizer",
                  checkpoints / "vq_cnn1_cb8192.pth", "--on-error", "skip", "--resume")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert report["reads"] == 2 and [s["file"].endswith("broken.pod5") for s in report["skipped"]] == [True]
    assert "1 reads skipped" in result.stdout


@pytest.mark.slow
def test_cli_tokenize_resume_after_kill(tmp_path, checkpoints):
    """Kill a run midway, resume it, and compare with an uninterrupted run: nothing lost, nothing doubled."""
    from nst_hf.io.writers import write_pod5
    from nst_hf.simulate import simulate_reads

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        write_pod5(folder / f"f{i}.pod5", simulate_reads(num_reads=3, min_samples=20000, max_samples=30000, seed=i))
    # a last file of 1 M samples keeps the run busy after the first parts, however fast the machine
    write_pod5(folder / "z_long.pod5", simulate_reads(num_reads=5, min_samples=200_000, max_samples=200_000, seed=9))
    tok = checkpoints / "rvq_nq4_cb1024.pth"
    full = _cli("tokenize", folder, "-o", tmp_path / "full.jsonl", "--tokenizer", tok, "--token-type", "L2")
    assert full.returncode == 0, full.stderr
    process = subprocess.Popen([sys.executable, "-m", "nst_hf", "tokenize", str(folder), "-o", str(tmp_path / "cut.jsonl"),
                                "--tokenizer", str(tok), "--token-type", "L2"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    manifest = tmp_path / "cut.jsonl.parts" / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (manifest.exists() and len(json.loads(manifest.read_text())["parts"]) >= 2):
        time.sleep(0.05)
    process.send_signal(signals.SIGKILL)
    process.wait()
    assert not (tmp_path / "cut.jsonl").exists()
    done = len(json.loads(manifest.read_text())["parts"])
    assert 2 <= done < 7
    again = _cli("tokenize", folder, "-o", tmp_path / "cut.jsonl", "--tokenizer", tok, "--token-type", "L2")
    assert again.returncode == 1 and "--resume" in again.stderr
    resumed = _cli("tokenize", folder, "-o", tmp_path / "cut.jsonl", "--tokenizer", tok, "--token-type", "L2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} files resumed" in resumed.stdout
    assert (tmp_path / "cut.jsonl").read_text() == (tmp_path / "full.jsonl").read_text()
    assert len(read_jsonl(tmp_path / "full.jsonl")) == 23
    assert not (tmp_path / "cut.jsonl.parts").exists()


def test_reads_to_dataset_names_the_corrupt_file_not_datasets(tmp_path):
    """A corrupt file under reads_to_dataset raises nst_hf's error with the file, not DatasetGenerationError."""
    from nst_hf.errors import CorruptFileError

    data = (Path(__file__).resolve().parents[1] / "examples" / "data" / "sample.pod5").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "half.pod5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="half.pod5"):
        nst_hf.reads_to_dataset([tmp_path / "in"], cache_dir=str(tmp_path / "cache"))
