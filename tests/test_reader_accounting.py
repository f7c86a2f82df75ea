"""Every read a file holds is delivered or reported: damaged SLOW5/BLOW5 records, headers that crash
pyslow5, descriptor leaks, and input discovery (symlinked folders, duplicates, odd names)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nst_hf
from nst_hf.errors import CorruptFileError

B1_ASCII = "blue-crab/test/data/exp/p2s/pod5-output/b1_ascii.slow5"
B1_BLOW5 = "blue-crab/test/data/exp/p2s/pod5-output/b1.blow5"


def _in_child(code: str, paths: list[str]) -> list[str]:
    """Run ``code`` on ``paths`` in a child process (a crash there must not end the test run); its output lines."""
    result = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, errors="replace",
                            timeout=300)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    return result.stdout.splitlines()


def _ids(source) -> list[str]:
    return [record.read_id for record in source]


def test_a_damaged_slow5_record_is_reported_and_the_reads_after_it_are_read(tmp_path, real_dir):
    clean = list(nst_hf.open_reads(real_dir / B1_ASCII))
    data = bytearray((real_dir / B1_ASCII).read_bytes())
    data[40000] ^= 0x55  # inside the first record's signal: pyslow5 alone stops here and reports nothing
    path = tmp_path / "damaged.slow5"
    path.write_bytes(bytes(data))
    with nst_hf.open_reads(path, on_error="skip") as source:
        delivered = {r.read_id: r for r in source}
    assert [s.read_id for s in source.skipped] == [clean[0].read_id]
    assert "len_raw_signal" in source.skipped[0].reason
    assert sorted(delivered) == sorted(r.read_id for r in clean[1:])
    for record in clean[1:]:
        np.testing.assert_array_equal(delivered[record.read_id].signal, record.signal)
    with pytest.raises(nst_hf.errors.InvalidReadError, match=clean[0].read_id):
        list(nst_hf.open_reads(path))


@pytest.mark.parametrize("name", [B1_BLOW5, "slow5tools/test/data/exp/f2s/multi-fast5-output/ssm1_zlib.blow5",
                                  "slow5tools/test/data/exp/index/example_multi_rg_v0.2.0_zstd_svb-zd.blow5"])
def test_a_blow5_record_pyslow5_cannot_parse_is_named_and_reading_goes_on(tmp_path, real_dir, name):
    from nst_hf.io.slow5_layout import scan

    clean = list(nst_hf.open_reads(real_dir / name))
    layout = scan(real_dir / name)
    data = bytearray((real_dir / name).read_bytes())
    victim = layout.records[1]
    middle = (victim.start + victim.end) // 2
    data[middle:middle + 64] = bytes(64)  # zero a block inside the second record's compressed bytes
    path = tmp_path / "damaged.blow5"
    path.write_bytes(bytes(data))
    with nst_hf.open_reads(path, on_error="skip") as source:
        delivered = {r.read_id: r for r in source}
    (skipped,) = source.skipped
    if layout.record_compression == 2:  # zstd: the damaged block holds the read id, so it is named by position
        assert skipped.read_id is None and "record 2 (read id unreadable)" in skipped.reason
    else:
        assert skipped.read_id == victim.read_id
    assert "pyslow5" in skipped.reason
    for record in clean:
        if record.read_id != victim.read_id:
            np.testing.assert_array_equal(delivered[record.read_id].signal, record.signal)


def test_a_truncated_blow5_keeps_the_whole_records_before_the_cut(tmp_path, real_dir):
    from nst_hf.io.slow5_layout import scan

    clean = list(nst_hf.open_reads(real_dir / B1_BLOW5))
    layout = scan(real_dir / B1_BLOW5)
    data = (real_dir / B1_BLOW5).read_bytes()
    path = tmp_path / "cut.blow5"
    path.write_bytes(data[:layout.records[2].start + 100])
    with nst_hf.open_reads(path, on_error="skip") as source:
        assert _ids(source) == [r.read_id for r in clean[:2]]
    assert len(source.skipped) == 1 and source.skipped[0].read_id is None
    assert "truncated" in source.skipped[0].reason
    with pytest.raises(CorruptFileError, match="cut.blow5"):
        list(nst_hf.open_reads(path))


HEADER_CASES = {
    "blow5 header size": (B1_BLOW5, lambda d: d[:64] + (2**31).to_bytes(4, "little") + d[68:]),
    "blow5 read groups 0": (B1_BLOW5, lambda d: d[:10] + bytes(4) + d[14:]),
    "blow5 record compression 7": (B1_BLOW5, lambda d: d[:9] + b"\x07" + d[10:]),
    "blow5 broken header tab": (B1_BLOW5, lambda d: d[:68] + d[68:3000].replace(b"\t", b" ", 1) + d[3000:]),
    "slow5 CRLF first line": (B1_ASCII, lambda d: d.replace(b"\n", b"\r\n", 1)),
    "slow5 read groups 0": (B1_ASCII, lambda d: d.replace(b"#num_read_groups\t1", b"#num_read_groups\t0", 1)),
    "slow5 read groups 2": (B1_ASCII, lambda d: d.replace(b"#num_read_groups\t1", b"#num_read_groups\t2", 1)),
    "slow5 repeated attribute": (B1_ASCII, lambda d: d.replace(b"@asic_id\t", b"@adc_max\t", 1)),
    "slow5 @@ attribute": (B1_ASCII, lambda d: d.replace(b"@run_id", b"@@run_id", 1)),
    "slow5 space in attribute": (B1_ASCII, lambda d: d.replace(b"@run_id", b"@run id", 1)),
    "slow5 empty enum label": (B1_ASCII, lambda d: d.replace(b"enum{unknown,", b"enum{,", 1)),
    "slow5 repeated enum label": (B1_ASCII, lambda d: d.replace(b"enum{unknown,", b"enum{unknown,unknown,", 1)),
    "blow5 repeated attribute": (B1_BLOW5, lambda d: d.replace(b"@asic_id\t", b"@adc_max\t", 1)),
}


@pytest.mark.slow
def test_headers_that_crash_pyslow5_are_refused_in_python(tmp_path, real_dir):
    """Each of these damaged headers kills the process inside pyslow5 1.5 (segfault or abort)."""
    paths = []
    for number, (source, damage) in enumerate(HEADER_CASES.values()):
        path = tmp_path / f"case{number}{Path(source).suffix}"
        path.write_bytes(damage((real_dir / source).read_bytes()))
        paths.append(str(path))
    code = ("import sys, nst_hf\nfrom nst_hf.errors import CorruptFileError\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n        list(nst_hf.open_reads(path))\n        print('READ', path)\n"
            "    except CorruptFileError as exc:\n        print('REFUSED', exc)\n")
    lines = _in_child(code, paths)
    assert len(lines) == len(paths), lines
    assert all(line.startswith("REFUSED") and "damaged SLOW5/BLOW5 header" in line for line in lines), lines


def test_the_probe_survives_a_file_that_crashes_pyslow5(tmp_path, real_dir):
    """A file past the checks that still crashes pyslow5 is caught by the helper process, which restarts."""
    from nst_hf.io._slow5_probe import Slow5Prober

    source, damage = HEADER_CASES["slow5 CRLF first line"]
    crashing = tmp_path / "crash.slow5"
    crashing.write_bytes(damage((real_dir / source).read_bytes()))
    prober = Slow5Prober()
    assert prober.probe(str(real_dir / B1_BLOW5)) is None
    assert "pyslow5 crashes on it" in prober.probe(str(crashing))
    assert prober.probe(str(real_dir / B1_ASCII)) is None  # a new helper took over


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_the_probe_helper_runs_on_one_thread(real_dir):
    """The helper only opens files: NumPy's BLAS in it starts no thread pool (one thread per core by default),
    whose start-up would take CPU from the tokenizer at the start of every run."""
    from nst_hf.io._slow5_probe import Slow5Prober

    prober = Slow5Prober()
    assert prober.probe(str(real_dir / B1_BLOW5)) is None  # pyslow5, and NumPy with it, is imported by now
    assert len(list(Path(f"/proc/{prober._process.pid}/task").iterdir())) == 1


def test_a_probe_requested_ahead_is_answered_for_its_own_file_only(tmp_path, real_dir):
    """request() lets the helper open the next file while this process works: the later probe of that file
    collects its answer, a crash included; a probe of another file than the one requested still answers
    for the file it names, and so does every probe after a crash."""
    from nst_hf.io._slow5_probe import Slow5Prober

    source, damage = HEADER_CASES["slow5 CRLF first line"]
    crashing = tmp_path / "crash.slow5"
    crashing.write_bytes(damage((real_dir / source).read_bytes()))
    good, other = str(real_dir / B1_BLOW5), str(real_dir / B1_ASCII)
    prober = Slow5Prober()
    prober.request(good)
    assert prober.probe(good) is None
    prober.request(str(crashing))
    assert "pyslow5 crashes on it" in prober.probe(str(crashing))  # the crash is the requested file's
    prober.request(str(crashing))
    assert prober.probe(other) is None  # requested one file, read another: answered for the other
    prober.request(good)
    prober.request(good)  # asked twice, answered once
    assert prober.probe(good) is None and prober.probe(good) is None


def test_a_file_that_crashes_pyslow5_is_skipped_among_files_probed_ahead(tmp_path, real_dir):
    """The helper opens b while a is read and dies on it; b is refused by nst_hf's own header check, so its
    answer is never read, and c is still probed and read by a new helper."""
    source, damage = HEADER_CASES["slow5 CRLF first line"]
    folder = tmp_path / "reads"
    folder.mkdir()
    (folder / "a.blow5").write_bytes((real_dir / B1_BLOW5).read_bytes())
    (folder / "b.slow5").write_bytes(damage((real_dir / source).read_bytes()))
    (folder / "c.slow5").write_bytes((real_dir / B1_ASCII).read_bytes())
    with nst_hf.open_reads(folder, on_error="skip") as reads:
        ids = _ids(reads)
    expected = _ids(nst_hf.open_reads(real_dir / B1_BLOW5)) + _ids(nst_hf.open_reads(real_dir / B1_ASCII))
    assert ids == expected
    assert [(Path(s.file).name, s.read_id) for s in reads.skipped] == [("b.slow5", None)]
    assert "damaged SLOW5/BLOW5 header" in reads.skipped[0].reason


_PREPARE = """
import sys
from nst_hf.io import prepare_readers
from nst_hf.io.slow5 import _PROBER
thread = prepare_readers(sys.argv[1:])
thread.join(timeout=120)
print(sorted(name for name in ("h5py", "pod5", "pandas", "pyslow5") if name in sys.modules))
print(list(_PROBER._pending))
print(_PROBER.probe(sys.argv[2]), list(_PROBER._pending))
"""


def test_prepare_readers_imports_the_readers_and_starts_the_first_slow5_probe(real_dir):
    """A run begins the readers' start-up before its first read: h5py and pod5 are imported on a thread (pod5
    without pandas; pyslow5 only in the probe helper), and the helper already opens the first SLOW5/BLOW5
    file, whose probe then collects that answer."""
    fast5 = next(str(p) for p in sorted(real_dir.rglob("*.fast5")))
    pod5 = next(str(p) for p in sorted(real_dir.rglob("*.pod5")))
    lines = _in_child(_PREPARE, [fast5, str(real_dir / B1_BLOW5), pod5, str(real_dir / B1_ASCII)])
    assert lines == ["['h5py', 'pod5']", f"[{str(real_dir / B1_BLOW5)!r}]", "None []"]


_CLI_SPY = """
import json, sys
import nst_hf.io as io
calls, real = [], io.prepare_readers
def spy(paths):
    paths = list(paths)
    calls.append(["torch" in sys.modules, [str(p) for p in paths]])
    return real(paths)
io.prepare_readers = spy
from nst_hf.cli import main
status = main(["tokenize", *sys.argv[1:]])
print(json.dumps([status, calls]))
"""


def test_the_cli_begins_the_readers_start_up_before_importing_torch(tmp_path, real_dir, monkeypatch):
    """`nst-hf tokenize` asks for the readers' start-up before its torch/transformers imports (seconds on a cold
    start), so that it overlaps them; the run's own call follows. A resumed run, or one with workers, makes no
    early call."""
    import json

    import nst_hf.io
    from nst_hf.cli._early import begin_readers

    blow5, out = str(real_dir / B1_BLOW5), str(tmp_path / "out.jsonl")
    status, calls = json.loads(_in_child(_CLI_SPY, [blow5, "-o", out, "--resample"])[-1])
    assert status == 0 and calls == [[False, [blow5]], [True, [blow5]]]
    early = []
    monkeypatch.setattr(nst_hf.io, "prepare_readers", lambda paths: early.append([str(p) for p in paths]))
    begin_readers([blow5], resume=True, workers=1)  # resume: only the run's call, with the files still to do
    begin_readers([blow5], resume=False, workers=2)  # workers: each worker's own reads
    begin_readers([tmp_path / "missing.blow5"], resume=False, workers=1)  # the run reports it, with its message
    begin_readers([blow5], resume=False, workers=1)
    assert early == [[blow5]]


def test_a_run_whose_first_file_crashes_the_probe_started_early_reads_the_rest(tmp_path, real_dir):
    """tokenize_inputs asks the helper to open the first SLOW5 file before loading and checking anything; when
    pyslow5 dies on that file, it is reported with its reason and the files after it are tokenized."""
    from nst_hf.pipeline import tokenize_inputs

    source, damage = HEADER_CASES["slow5 CRLF first line"]
    folder = tmp_path / "reads"
    folder.mkdir()
    crashing = damage((real_dir / source).read_bytes())
    (folder / "a.slow5").write_bytes(crashing)
    (folder / "b.blow5").write_bytes((real_dir / B1_BLOW5).read_bytes())
    summary = tokenize_inputs([folder], tmp_path / "out.jsonl", tokenizer="default", on_error="skip",
                              progress=False, resample=True)
    rows = [line for line in (tmp_path / "out.jsonl").read_text().splitlines() if line]
    assert len(rows) == summary.reads == len(_ids(nst_hf.open_reads(real_dir / B1_BLOW5)))
    assert [(Path(s.file).name, s.read_id) for s in summary.skipped] == [("a.slow5", None)]


def test_blank_lines_between_slow5_records_lose_nothing(tmp_path, real_dir):
    clean = [r.read_id for r in nst_hf.open_reads(real_dir / B1_ASCII)]
    data = (real_dir / B1_ASCII).read_bytes()
    second = data.index(clean[1].encode())
    path = tmp_path / "blank.slow5"
    path.write_bytes(data[:second] + b"\n  \n" + data[second:])  # pyslow5 alone stops at the blank line
    with nst_hf.open_reads(path, on_error="skip") as source:
        assert _ids(source) == clean
    assert source.skipped == []


def _reads_cleanly(path: str) -> bool:
    with nst_hf.open_reads(path, on_error="skip") as source:
        count = sum(1 for _ in source)
    return count > 0 and not source.skipped


def _tiny_slow5(real_dir, samples: int = 40) -> bytes:
    data = (real_dir / B1_ASCII).read_bytes()
    header_end = data.index(b"\n", data.index(b"#read_id")) + 1
    fields = data[header_end:data.index(b"\n", header_end)].split(b"\t")
    fields[6] = str(samples).encode()
    fields[7] = b",".join(fields[7].split(b",")[:samples])
    return data[:header_end] + b"\t".join(fields) + b"\n"


@pytest.mark.slow
def test_two_thousand_slow5_files_under_a_low_descriptor_limit(tmp_path, real_dir):
    tiny = _tiny_slow5(real_dir)
    for i in range(2000):
        (tmp_path / f"r{i:04d}.slow5").write_bytes(tiny)
    code = ("import resource, sys, nst_hf\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
            "with nst_hf.open_reads(sys.argv[1], on_error='skip') as source:\n"
            "    count = sum(1 for _ in source)\n"
            "print(count, len(source.skipped))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2000", "0"]


@pytest.mark.slow
@pytest.mark.parametrize("formats, per_file, minimum", [((".slow5", ".blow5"), 8, 400), ((".fast5", ".pod5"), 10, 200)])
def test_fuzzed_files_crash_nothing_and_lose_no_read(real_dir, formats, per_file, minimum):
    from nst_hf.fuzzing import run_campaign

    files = sorted(str(p) for p in real_dir.rglob("*") if p.suffix in formats and p.stat().st_size < 1_500_000)
    clean = [f for f in files if _reads_cleanly(f)]  # the stripped VBZ file has no calibration to fuzz
    assert len(clean) >= 15
    result = run_campaign(clean, mutants_per_file=per_file, seed=17)
    summary = result.to_dict()
    assert result.mutants > minimum
    assert summary["crashed"] == summary["hung"] == summary["aborted_under_skip"] == 0, summary["failures"]
    assert summary["reads_lost_without_report"] == 0, summary["failures"]["lost"]
    assert summary["reads_reported"] > 0


def test_symlinked_folders_are_followed_once_and_duplicates_dropped(tmp_path, real_dir, caplog):
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "x.slow5").write_bytes(_tiny_slow5(real_dir))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "y.slow5").write_bytes(_tiny_slow5(real_dir, 30))
    os.symlink(outside, runs / "linked")          # a symlinked sub-directory
    os.symlink(runs, runs / "a" / "loop")         # a loop back to the top
    os.link(runs / "a" / "x.slow5", runs / "a" / "x_hardlink.slow5")
    from nst_hf.io import find_signal_files

    found = find_signal_files([runs, runs / "a" / "x.slow5"])
    assert sorted(p.name for p in found) == ["x.slow5", "y.slow5"]
    assert any("the same file as" in message for message in caplog.messages)


def test_file_names_that_are_not_utf8(tmp_path, real_dir):
    name = os.fsdecode(b"reads_\xff.slow5")
    path = tmp_path / name
    path.write_bytes(_tiny_slow5(real_dir))
    assert len(list(nst_hf.open_reads(tmp_path))) == 1
    assert len(list(nst_hf.open_reads(os.fsencode(path)))) == 1


@pytest.mark.slow
def test_pod5_batches_that_crash_arrow_are_validated_first(tmp_path, real_dir):
    """Two seeded mutants of b1.pod5 that segfaulted inside Arrow (a read batch with a missing float
    buffer, a damaged run-info table): now their reads are reported and the process lives."""
    from nst_hf.fuzzing import random_mutant

    sources = ["vbz_compression/test_data/multi_fast5_vbz.fast5", "pod5-file-format/test_data/multi_fast5_zip.fast5",
               "blue-crab/test/data/raw/p2s/pod5/b/b1.pod5"]
    rng = np.random.default_rng(99)
    mutants = [[random_mutant((real_dir / s).read_bytes(), rng) for _ in range(40)] for s in sources]
    paths = []
    for index in (17, 4):
        path = tmp_path / f"m{index}.pod5"
        path.write_bytes(mutants[2][index].data)
        paths.append(str(path))
    code = ("import sys, nst_hf\n"
            "for path in sys.argv[1:]:\n"
            "    with nst_hf.open_reads(path, on_error='skip') as source:\n"
            "        print(sum(1 for _ in source), [s.read_id for s in source.skipped])\n")
    clean = sorted(r.read_id for r in nst_hf.open_reads(real_dir / sources[2]))
    batch, table = _in_child(code, paths)
    assert batch.startswith("0 ") and sorted(eval(batch[2:])) == clean  # every read named
    assert table == "0 [None]"  # the whole file reported
