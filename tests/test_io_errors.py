"""Bad input: every failure names the file, the read and the problem; skipping never loses good reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

import nst_hf
from nst_hf.errors import CorruptFileError, InvalidReadError, MissingDependencyError, UnsupportedFormatError
from nst_hf.io.writers import write_fast5, write_pod5


def _record(i, n=200, **overrides):
    values = dict(read_id=str(uuid.UUID(int=i + 1)), signal=(np.arange(n) % 50 + 400 + i).astype(np.int16),
                  sampling_rate=4000.0, offset=10.0, range=1400.0, digitisation=8192.0)
    values.update(overrides)
    return nst_hf.SignalRecord(**values)


@pytest.fixture
def mixed_fast5(tmp_path):
    """Three good reads around three bad ones (empty, zero digitisation, NaN offset)."""
    records = [_record(0), _record(1, n=0), _record(2), _record(3, digitisation=0.0),
               _record(4, offset=float("nan")), _record(5)]
    return write_fast5(tmp_path / "mixed.fast5", records, compression="gzip"), records


def test_bad_reads_raise_with_file_read_and_reason(mixed_fast5):
    path, records = mixed_fast5
    with pytest.raises(InvalidReadError, match=rf"mixed.fast5: read {records[1].read_id}: empty signal"):
        list(nst_hf.open_reads(path))


def test_skip_keeps_every_good_read_and_reports_bad_ones(mixed_fast5, caplog):
    path, records = mixed_fast5
    with nst_hf.open_reads(path, on_error="skip") as source:
        good = [r.read_id for r in source]
    assert good == [records[i].read_id for i in (0, 2, 5)]
    reasons = {s.read_id: s.reason for s in source.skipped}
    assert set(reasons) == {records[i].read_id for i in (1, 3, 4)}
    assert "empty signal" in reasons[records[1].read_id]
    assert "digitisation is 0" in reasons[records[3].read_id]
    assert "non-finite calibration" in reasons[records[4].read_id]
    assert all(s.file == str(path) for s in source.skipped)
    assert sum("skipping read" in m for m in caplog.messages) == 3


def test_truncated_and_corrupt_files(tmp_path, real_dir):
    good = tmp_path / "good.pod5"
    shutil.copy(real_dir / "blue-crab/test/data/raw/p2s/pod5/b/b1.pod5", good)
    cases = {}
    for rel, name in [("pod5-file-format/test_data/multi_fast5_zip.fast5", "cut.fast5"),
                      ("blue-crab/test/data/raw/p2s/pod5/b/b1.pod5", "cut.pod5"),
                      ("blue-crab/test/data/exp/p2s/pod5-output/b1.blow5", "cut.blow5")]:
        data = (real_dir / rel).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        cases[name] = tmp_path / name
    (tmp_path / "noise.pod5").write_bytes(np.random.RandomState(0).bytes(5000))
    (tmp_path / "noise.fast5").write_bytes(np.random.RandomState(1).bytes(5000))
    (tmp_path / "text.slow5").write_text("hello\tworld\n")
    for path in [*cases.values(), tmp_path / "noise.pod5", tmp_path / "noise.fast5", tmp_path / "text.slow5"]:
        with pytest.raises((CorruptFileError, InvalidReadError)) as info:
            list(nst_hf.open_reads(path))
        assert path.name in str(info.value)
    # In skip mode the good file still yields all its reads and every broken file is reported.
    with nst_hf.open_reads(tmp_path, on_error="skip") as source:
        ids = [r.read_id for r in source]
    assert {r.read_id for r in nst_hf.open_reads(good)} <= set(ids)
    skipped_files = {s.file.rsplit("/", 1)[-1] for s in source.skipped}
    assert {"noise.pod5", "noise.fast5", "text.slow5", "cut.blow5", "cut.pod5"} <= skipped_files


@pytest.mark.slow
def test_blow5_newer_version_raises_instead_of_crashing(tmp_path, real_dir):
    data = bytearray((real_dir / "blue-crab/test/data/exp/p2s/pod5-output/b1.blow5").read_bytes())
    data[6:9] = bytes([1, 1, 0])  # version 1.1.0: pyslow5 1.5.0 segfaults on this
    path = tmp_path / "new.blow5"
    path.write_bytes(bytes(data))
    code = ("import nst_hf, sys\n"
            "from nst_hf.errors import UnsupportedFormatError\n"
            f"try:\n    list(nst_hf.open_reads({str(path)!r}))\n"
            "except UnsupportedFormatError as e:\n    print('RAISED', e); sys.exit(3)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "version 1.1.0 is newer than the supported 0.2.0" in result.stdout


def test_unknown_extension_and_missing_path(tmp_path):
    (tmp_path / "reads.txt").write_text("not a signal")
    with pytest.raises(UnsupportedFormatError, match=r"reads.txt: unknown signal file extension '.txt'"):
        nst_hf.open_reads(tmp_path / "reads.txt")
    with pytest.raises(FileNotFoundError, match="nope.pod5: no such file"):
        nst_hf.open_reads(tmp_path / "nope.pod5")


def test_directory_with_non_signal_files(tmp_path):
    write_pod5(tmp_path / "a.pod5", [_record(0), _record(1)])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "summary.tsv").write_text("a\tb\n")
    write_fast5(tmp_path / "sub" / "b.fast5", [_record(2)])
    with nst_hf.open_reads(tmp_path) as source:
        assert len(list(source)) == 3
        assert source.skipped == []


def test_fast5_without_raw_reads(tmp_path):
    import h5py

    path = tmp_path / "events_only.fast5"
    with h5py.File(path, "w") as handle:
        handle.create_group("Analyses")
    with pytest.raises(CorruptFileError, match="holds no raw reads"):
        list(nst_hf.open_reads(path))


@pytest.mark.slow
def test_vbz_without_plugin_names_the_package(real_dir):
    path = real_dir / "vbz_compression/test_data/multi_fast5_vbz.fast5"
    code = ("import sys; sys.modules['vbz_h5py_plugin'] = None\n"
            "import nst_hf\nfrom nst_hf.errors import MissingDependencyError\n"
            f"try:\n    list(nst_hf.open_reads({str(path)!r}))\n"
            "except MissingDependencyError as e:\n    print(e); sys.exit(3)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HDF5_PLUGIN_PATH": "/nonexistent"})
    assert result.returncode == 3, result.stdout + result.stderr
    assert "vbz-h5py-plugin" in result.stdout


def test_writers_round_trip(tmp_path):
    records = [_record(i, n=1000 + i) for i in range(3)]
    for path in (write_fast5(tmp_path / "x.fast5", records), write_pod5(tmp_path / "x.pod5", records)):
        back = list(nst_hf.open_reads(path))
        assert [r.read_id for r in back] == [r.read_id for r in records]
        for a, b in zip(records, back):
            np.testing.assert_array_equal(a.signal, b.signal)
            np.testing.assert_allclose(a.signal_pa, b.signal_pa, rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fast5", "x.pod5"]  # no temporary files left
