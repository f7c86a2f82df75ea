"""A tokenize run never destroys its inputs, never replaces what it did not write, never mixes
tokenizers on resume, never shares its output, and leaves no workers or temporary files behind."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nst_hf
from nst_hf.errors import CheckpointError
from nst_hf.io.writers import write_fast5, write_pod5
from nst_hf.pipeline import OutputLock, tokenize_inputs
from nst_hf.simulate import simulate_reads


@pytest.fixture(scope="module")
def default():
    return nst_hf.load_tokenizer("default")


def _pod5_folder(folder: Path, files: int, reads: int, min_samples: int, max_samples: int) -> Path:
    folder.mkdir()
    for i in range(files):
        write_pod5(folder / f"f{i}.pod5", simulate_reads(num_reads=reads, min_samples=min_samples,
                                                          max_samples=max_samples, seed=i))
    return folder


@pytest.fixture
def run_folder(tmp_path):
    return _pod5_folder(tmp_path / "run", files=2, reads=2, min_samples=3000, max_samples=4000)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nst_hf", *map(str, args)], capture_output=True, text=True,
                          errors="replace", timeout=600, env=env)


@pytest.mark.slow
def test_output_that_is_an_input_is_refused_and_the_input_kept(run_folder):
    before = _snapshot(run_folder)
    target = run_folder / "f0.pod5"
    result = _cli("tokenize", target, "-o", target, "--resample")
    assert result.returncode == 1 and "is one of the input files" in result.stderr, result.stderr
    result = _cli("tokenize", run_folder, "-o", run_folder, "--format", "dataset")
    assert result.returncode == 1 and "lies inside the input directory" in result.stderr, result.stderr
    assert _snapshot(run_folder) == before  # byte-identical, nothing added


def test_outputs_inside_inputs_or_through_links_are_refused(run_folder, tmp_path, default):
    link = tmp_path / "link.pod5"
    link.symlink_to(run_folder / "f1.pod5")
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "run").symlink_to(run_folder)
    before = _snapshot(run_folder)
    for inputs, output in [([run_folder], run_folder / "tokens.jsonl"), ([run_folder / "f1.pod5"], link),
                           ([run_folder], outer / "run" / "x.parquet"), ([run_folder / "f0.pod5"], run_folder)]:
        with pytest.raises(ValueError, match="input"):
            tokenize_inputs(inputs, output, tokenizer=default, progress=False)
    assert _snapshot(run_folder) == before


def test_an_existing_output_needs_overwrite_and_foreign_files_are_never_replaced(run_folder, tmp_path, default):
    out = tmp_path / "tokens.jsonl"
    tokenize_inputs([run_folder], out, tokenizer=default, progress=False)
    first = out.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        tokenize_inputs([run_folder], out, tokenizer=default, progress=False)
    with pytest.raises(FileExistsError, match="this one finished"):
        tokenize_inputs([run_folder], out, tokenizer=default, progress=False, resume=True)
    tokenize_inputs([run_folder], out, tokenizer=default, progress=False, overwrite=True)
    assert out.read_bytes() == first
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"my": "lab notes"}\n')
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious")
    for target, fmt in [(foreign, "jsonl"), (folder, "dataset")]:
        with pytest.raises(FileExistsError, match="not an nst_hf output"):
            tokenize_inputs([run_folder], target, tokenizer=default, fmt=fmt, overwrite=True, progress=False)
    assert foreign.read_text() == '{"my": "lab notes"}\n' and (folder / "thesis.txt").read_text() == "precious"
    dataset = tmp_path / "ds"
    tokenize_inputs([run_folder], dataset, tokenizer=default, fmt="dataset", progress=False)
    tokenize_inputs([run_folder], dataset, tokenizer=default, fmt="dataset", overwrite=True, progress=False)
    from datasets import load_from_disk

    assert len(load_from_disk(str(dataset))) == 4


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(run_folder, tmp_path, default):
    out = tmp_path / "tokens.jsonl"
    tokenize_inputs([run_folder], out, tokenizer=default, progress=False)
    first = out.read_bytes()
    (run_folder / "zz_broken.pod5").write_bytes(b"\0" * 4096)
    with pytest.raises(nst_hf.errors.CorruptFileError, match="zz_broken.pod5"):
        tokenize_inputs([run_folder], out, tokenizer=default, progress=False, overwrite=True)
    assert out.read_bytes() == first


def test_resume_refuses_a_tokenizer_whose_content_changed(run_folder, tmp_path, default):
    import torch

    folder = tmp_path / "tok"
    default.save_pretrained(folder)
    (run_folder / "zz_broken.pod5").write_bytes(b"\0" * 4096)
    out = tmp_path / "tokens.jsonl"
    with pytest.raises(nst_hf.errors.CorruptFileError):
        tokenize_inputs([run_folder], out, tokenizer=str(folder), progress=False)
    assert (tmp_path / "tokens.jsonl.parts" / "manifest.json").exists()  # two files done, resumable
    changed = nst_hf.load_tokenizer(str(folder))
    with torch.no_grad():
        next(changed.model.parameters()).add_(0.01)
    changed.save_pretrained(folder)  # same path, other weights
    (run_folder / "zz_broken.pod5").unlink()
    with pytest.raises(ValueError, match="different tokenizer"):
        tokenize_inputs([run_folder], out, tokenizer=str(folder), progress=False, resume=True)
    for setting in ({"token_type": "L1"}, {"return_ids": True}):
        with pytest.raises(ValueError, match="different"):
            tokenize_inputs([run_folder], out, tokenizer=default, progress=False, resume=True, **setting)
    summary = tokenize_inputs([run_folder], out, tokenizer=default, progress=False, resume=True)
    assert summary.files_resumed == 2 and summary.reads == 4


def test_a_tokenizer_folder_missing_a_file_is_refused(tmp_path, default):
    for missing in ("bwav_preprocessor_config.json", "tokenizer_config.json"):
        folder = tmp_path / missing
        default.save_pretrained(folder)
        (folder / missing).unlink()
        with pytest.raises(CheckpointError, match=missing):
            nst_hf.load_tokenizer(str(folder))
        with pytest.raises(CheckpointError, match=missing):
            nst_hf.NstVQTokenizer.from_pretrained(folder)


def test_absurd_configs_are_refused(default):
    with pytest.raises(CheckpointError, match="min_samples"):
        nst_hf.NstVQTokenizer(model=default.model, min_samples=10**9)
    with pytest.raises(CheckpointError, match="dimension"):
        nst_hf.NstKMeansTokenizer(centroids=np.zeros((4, 10**6), np.float32), dimension=10**6, stride=8)
    with pytest.raises(CheckpointError, match="NaN"):
        nst_hf.NstKMeansTokenizer(centroids=np.full((4, 8), np.nan, np.float32), dimension=8, stride=8)


def test_implausible_sampling_rates_are_per_read_errors_before_resampling(tmp_path, default):
    good = simulate_reads(num_reads=1, min_samples=3000, max_samples=3000, seed=1)[0]
    odd = [dataclasses.replace(good, read_id=f"rate{rate}", sampling_rate=rate) for rate in (0.01, 1.0, 250.0)]
    path = write_fast5(tmp_path / "in" / "rates.fast5", [good, *odd])
    summary = tokenize_inputs([path], tmp_path / "out.jsonl", tokenizer=default, resample=True, on_error="skip",
                              progress=False)
    assert summary.reads == 1
    assert {s.read_id: "plausible range" in s.reason for s in summary.skipped} == {
        "rate0.01": True, "rate1.0": True, "rate250.0": True}
    fast = nst_hf.NstVQTokenizer(model=default.model, preprocessing=nst_hf.PreprocessingConfig(sampling_rate=20_000))
    with pytest.raises(nst_hf.errors.InvalidSignalError, match="more than 10 times longer"):
        fast.encode_signal(np.random.RandomState(0).randn(1000).astype(np.float32), sampling_rate=1000, resample=True)


def test_reads_without_tokens_are_reported_not_written_as_empty_rows(tmp_path, default):
    good = simulate_reads(num_reads=1, min_samples=3000, max_samples=3000, seed=2)[0]
    flat = dataclasses.replace(good, read_id="flat", signal=np.full(3000, 500, np.int16))
    short = dataclasses.replace(good, read_id="short", signal=good.signal[:10])
    path = write_fast5(tmp_path / "in" / "few.fast5", [good, flat, short])
    out = tmp_path / "out.jsonl"
    summary = tokenize_inputs([path], out, tokenizer=default, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [good.read_id] and rows[0]["text"]
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    reasons = {s["read_id"]: s["reason"] for s in report["skipped"]}
    assert "constant" in reasons["flat"] and "too short" in reasons["short"] and summary.reads == 1


def test_gzip_output_is_deterministic_and_its_parts_are_compressed(run_folder, tmp_path, default):
    (run_folder / "zz_broken.pod5").write_bytes(b"\0" * 4096)
    out = tmp_path / "a.jsonl.gz"
    with pytest.raises(nst_hf.errors.CorruptFileError):
        tokenize_inputs([run_folder], out, tokenizer=default, progress=False)
    parts = [p for p in (tmp_path / "a.jsonl.gz.parts").iterdir() if p.name != "manifest.json"]
    assert len(parts) == 2 and all(p.read_bytes()[:2] == b"\x1f\x8b" for p in parts)  # scratch ≈ output size
    (run_folder / "zz_broken.pod5").unlink()
    tokenize_inputs([run_folder], out, tokenizer=default, progress=False, resume=True)
    time.sleep(1.1)  # a gzip timestamp would now differ
    tokenize_inputs([run_folder], tmp_path / "b.jsonl.gz", tokenizer=default, progress=False)
    assert out.read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert len(gzip.decompress(out.read_bytes()).splitlines()) == 4


@pytest.mark.slow
def test_one_writer_per_output_and_leftovers_are_cleaned(run_folder, tmp_path, default):
    out = tmp_path / "tokens.jsonl"
    with OutputLock(out):
        result = _cli("tokenize", run_folder, "-o", out)
        assert result.returncode == 1 and "another nst-hf run" in result.stderr, result.stderr
        with pytest.raises(FileExistsError, match="another nst-hf run"):
            tokenize_inputs([run_folder], out, tokenizer=default, progress=False, resume=True)
    (tmp_path / "tokens.jsonl.lock").write_text("12345\n")  # stale: its run was killed
    leftover = tmp_path / ".tokens.jsonl.99999.tmp"
    leftover.write_text("half an output")
    tokenize_inputs([run_folder], out, tokenizer=default, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tokens.jsonl", "tokens.jsonl.report.json"]


def test_non_utf8_input_names_run_and_are_listed(tmp_path, default):
    folder = tmp_path / "in"
    folder.mkdir()
    written = write_pod5(folder / "reads.pod5", simulate_reads(num_reads=1, min_samples=3000, max_samples=3000, seed=4))
    written.rename(Path(os.fsdecode(os.fsencode(folder) + b"/reads_\xff.pod5")))  # pod5 writes UTF-8 names only
    out = tmp_path / "out.jsonl"
    summary = tokenize_inputs([folder], out, tokenizer=default, progress=False)
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert summary.reads == 1 and report["non_utf8_paths"] == [os.fsdecode(folder) + "/reads_\\xff.pod5"]


@pytest.mark.slow
def test_workers_die_with_their_parent(tmp_path):
    folder = _pod5_folder(tmp_path / "in", files=6, reads=4, min_samples=200_000, max_samples=300_000)
    parent = subprocess.Popen([sys.executable, "-m", "nst_hf", "tokenize", str(folder), "-o", str(tmp_path / "o.jsonl"),
                               "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError, ValueError):
                continue
            if entry.isdigit() and int(fields[1]) == parent.pid:
                found.append(int(entry))
        return found

    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "o.jsonl.parts" / "manifest.json").exists() and len(children()) < 2:
        time.sleep(0.2)
    workers = children()
    assert len(workers) >= 2, "the run started no workers"
    time.sleep(2)  # the workers are tokenizing now
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    alive = workers
    while time.time() < deadline and alive:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()
                 and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        time.sleep(0.2)
    assert alive == [], f"workers {alive} outlived their parent"


def test_parts_manifest_output_and_their_folders_are_flushed_before_each_rename(run_folder, tmp_path, default,
                                                                                monkeypatch):
    flushed: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out = tmp_path / "tokens.jsonl"
    tokenize_inputs([run_folder], out, tokenizer=default, progress=False)
    parts = str(tmp_path / "tokens.jsonl.parts")
    assert sum(1 for p in flushed if p.startswith(parts + "/.") and "manifest" not in os.path.basename(p)) == 2
    assert any(p.startswith(parts + "/.manifest.json.") for p in flushed)
    assert any(p.startswith(str(tmp_path / ".tokens.jsonl.")) for p in flushed)  # the output before its rename
    assert flushed.count(parts) >= 3 and str(tmp_path) in flushed  # the renames themselves


@pytest.mark.slow
def test_sigterm_ends_with_one_line_and_resumes_to_the_same_output(tmp_path):
    folder = _pod5_folder(tmp_path / "in", files=5, reads=3, min_samples=60_000, max_samples=80_000)
    full = _cli("tokenize", folder, "-o", tmp_path / "full.jsonl")
    assert full.returncode == 0, full.stderr
    # batches of ~3 reads, so that a file's part is written well before the end (by default the reads of all 5 files
    # share one batch); the full and resumed runs keep the default: batching does not change the bytes
    process = subprocess.Popen([sys.executable, "-m", "nst_hf", "tokenize", str(folder), "-o", str(tmp_path / "cut.jsonl"),
                                "--batch-samples", "200000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "cut.jsonl.parts" / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline and not manifest.exists() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")  # pragma: no cover - a very fast machine
    assert process.returncode == 143 and stderr.strip().splitlines()[-1].startswith("nst-hf: terminated"), stderr
    assert not (tmp_path / "cut.jsonl").exists() and manifest.exists()
    resumed = _cli("tokenize", folder, "-o", tmp_path / "cut.jsonl", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "cut.jsonl").read_bytes() == (tmp_path / "full.jsonl").read_bytes()


def test_a_failed_folder_swap_puts_the_old_output_back(tmp_path, monkeypatch):
    from nst_hf import output as output_module

    old, new = tmp_path / "ds", tmp_path / "new"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "data").write_text(text)
    real_replace, calls = os.replace, []

    def failing_second_rename(source, target):
        calls.append((source, target))
        if len(calls) == 2:
            raise OSError(5, "injected failure")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="injected"):
        output_module.replace_path(new, old)
    assert (old / "data").read_text() == "old" and (new / "data").read_text() == "new"


def test_cleaning_leftovers_touches_only_this_outputs_temporaries(run_folder, tmp_path, default):
    out = tmp_path / "out.jsonl"
    neighbour = tmp_path / ".out.jsonl.gz.4242.tmp"  # another output's run in progress
    neighbour.write_text("partial output of a concurrent run")
    mine = tmp_path / ".out.jsonl.4242.tmp"
    mine.write_text("left by a killed run")
    user = tmp_path / "out.jsonl.parts" / ".user_stuff.tmp"
    user.mkdir(parents=True)
    (user / "precious").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an nst_hf parts folder"):
        tokenize_inputs([run_folder], out, tokenizer=default, progress=False, resume=True)
    assert (user / "precious").read_text() == "keep me" and neighbour.exists()
    (user / "precious").unlink()
    user.rmdir()
    tokenize_inputs([run_folder], out, tokenizer=default, progress=False, resume=True)
    assert neighbour.exists() and not mine.exists()


def test_the_lock_never_follows_a_symlink_nor_takes_a_foreign_file(run_folder, tmp_path, default):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not truncate")
    (tmp_path / "a.jsonl.lock").symlink_to(victim)
    with pytest.raises(FileExistsError, match="lock file"):
        tokenize_inputs([run_folder], tmp_path / "a.jsonl", tokenizer=default, progress=False)
    (tmp_path / "b.jsonl.lock").write_text("my notes")
    with pytest.raises(FileExistsError, match="not an nst-hf lock file"):
        tokenize_inputs([run_folder], tmp_path / "b.jsonl", tokenizer=default, progress=False)
    assert victim.read_text() == "do not truncate" and (tmp_path / "b.jsonl.lock").read_text() == "my notes"


def _wait_for(path: Path, timeout_s: float = 300) -> float:
    started = time.time()
    while not path.exists() and time.time() - started < timeout_s:
        time.sleep(0.02)
    return time.time()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_same_bytes(tmp_path):
    """Ten SIGKILLs spread from the first finished part to past the end (assembly and renames included)."""
    import random

    folder = _pod5_folder(tmp_path / "in", files=4, reads=3, min_samples=40_000, max_samples=60_000)
    command = [sys.executable, "-m", "nst_hf", "tokenize", str(folder), "-o"]
    full = tmp_path / "full.jsonl.gz"
    process = subprocess.Popen(command + [str(full)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_part = _wait_for(tmp_path / "full.jsonl.gz.parts" / "manifest.json")
    span = _wait_for(full) - first_part  # from the first finished part to the output in place
    assert process.wait(timeout=300) == 0
    reference = full.read_bytes()
    rng = random.Random(2026)
    resumed_runs = 0
    for attempt in range(10):
        out = tmp_path / f"cut{attempt}.jsonl.gz"
        process = subprocess.Popen(command + [str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(tmp_path / f"cut{attempt}.jsonl.gz.parts" / "manifest.json")
        time.sleep(rng.uniform(0, span * 1.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if not (out.exists() and not (tmp_path / f"cut{attempt}.jsonl.gz.parts").exists()):
            resumed = tokenize_inputs([folder], out, progress=False, resume=True)
            assert resumed.reads == 12
            resumed_runs += 1
        assert out.read_bytes() == reference, attempt
        lock = tmp_path / f"cut{attempt}.jsonl.gz.lock"
        if lock.exists():  # killed after the output was complete, before the lock file was removed
            assert not (tmp_path / f"cut{attempt}.jsonl.gz.parts").exists()
            assert lock.read_text().strip() == str(process.pid)  # a dead run's lock, which the next run takes over
            tokenize_inputs([folder], out, progress=False, overwrite=True)
            assert out.read_bytes() == reference and not lock.exists()
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((f"cut{attempt}.", f".cut{attempt}."))]
        assert sorted(leftovers) == [f"cut{attempt}.jsonl.gz", f"cut{attempt}.jsonl.gz.report.json"], leftovers
    assert resumed_runs >= 5  # most kills landed inside the run


@pytest.mark.slow
def test_a_file_size_limit_fails_cleanly_and_resume_completes(run_folder, tmp_path, default):
    import resource

    reference = tmp_path / "reference.jsonl"
    tokenize_inputs([run_folder], reference, tokenizer=default, progress=False)
    limit = reference.stat().st_size * 3 // 4  # each part fits, the whole output does not

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out.jsonl"
    result = subprocess.run([sys.executable, "-B", "-m", "nst_hf", "tokenize", str(run_folder), "-o", str(out)],
                            capture_output=True, text=True, timeout=600, preexec_fn=limited)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "File too large" in line and "out.jsonl" in line, line
    assert not out.exists()
    resumed = _cli("tokenize", run_folder, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.slow
def test_tokenize_under_skip_exits_0_on_a_folder_of_damaged_files(tmp_path, real_dir):
    from nst_hf.fuzzing import random_mutant, slow5_header_mutants

    sources = ["vbz_compression/test_data/multi_fast5_vbz.fast5", "blue-crab/test/data/raw/p2s/pod5/b/b1.pod5",
               "blue-crab/test/data/exp/p2s/pod5-output/b1.blow5", "blue-crab/test/data/exp/p2s/pod5-output/b1_ascii.slow5"]
    rng = np.random.default_rng(5)
    folder = tmp_path / "in"
    folder.mkdir()
    for number, source in enumerate(sources):
        data = (real_dir / source).read_bytes()
        mutants = [random_mutant(data, rng) for _ in range(15)]
        if source.endswith(("slow5", "blow5")):
            mutants += slow5_header_mutants(data, binary=source.endswith("blow5"))[::3]
        for index, mutant in enumerate(mutants):
            (folder / f"f{number}_m{index}{Path(source).suffix}").write_bytes(mutant.data)
    result = _cli("tokenize", folder, "-o", tmp_path / "out.jsonl", "--on-error", "skip", "--resample")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    rows = (tmp_path / "out.jsonl").read_text().splitlines()
    assert report["files"] == len(list(folder.iterdir())) and report["reads"] == len(rows) > 0
    assert report["skipped"] and all(s["reason"] for s in report["skipped"])


def test_a_run_that_fails_before_any_part_leaves_nothing_behind(tmp_path, run_folder):
    """The next run then needs neither --resume nor --overwrite."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.pod5").write_bytes(b"not a pod5 file" * 100)
    out = tmp_path / "out.jsonl"
    with pytest.raises(Exception):
        tokenize_inputs([bad], out, tokenizer="default", progress=False)  # on_error="raise": the file fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "run"]
    summary = tokenize_inputs([run_folder], out, tokenizer="default", progress=False)
    assert summary.reads == 4 and out.exists()


@pytest.mark.slow
def test_cli_errors_name_the_input_and_the_fix(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    sample = Path(__file__).resolve().parents[1] / "examples" / "data" / "sample.pod5"
    typo = _cli("tokenize", sample, "-o", tmp_path / "o.jsonl", "--tokenizer", "defualt", env=env)
    assert typo.returncode == 1 and len(typo.stderr.strip().splitlines()) == 1
    assert "defualt: no such file or folder (did you mean the built-in 'default'?)" in typo.stderr
    assert "not in the Hub cache" in typo.stderr and "huggingface.co" not in typo.stderr
    missing = _cli("inspect", "/nonexistent/tokenizer", env=env)
    assert missing.returncode == 1 and "/nonexistent/tokenizer: no such file or" in missing.stderr
    assert "Repo id" not in missing.stderr
    assert not (tmp_path / "o.jsonl.parts").exists() and not (tmp_path / "o.jsonl.lock").exists()


@pytest.mark.slow
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, real_dir):
    process = subprocess.Popen([sys.executable, "-m", "nst_hf", "inspect", str(real_dir), "--reads"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141 and stderr == ""


def test_the_progress_bar_has_a_total_and_an_eta(run_folder, tmp_path, capsys):
    tokenize_inputs([run_folder], tmp_path / "o.jsonl", tokenizer="default", progress=True)
    err = capsys.readouterr().err
    assert re.search(r"tokenizing: +\d+%\|", err) and "100%|" in err and "<00:00" in err and "reads=4" in err, err
