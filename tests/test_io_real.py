"""Every real file in ../shared/data/real reads with the verified ids, counts, calibration and pA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nst_hf
from nst_hf.errors import MissingCalibrationError

EXPECTED = json.loads((Path(__file__).resolve().parents[2] / "shared/data/real/expected.json").read_text()) \
    if (Path(__file__).resolve().parents[2] / "shared/data/real/expected.json").exists() else {}


def _read_all(path):
    with nst_hf.open_reads(path) as source:
        return list(source)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_real_file_matches_expected(real_dir, expected, rel):
    facts = expected[rel]
    records = _read_all(real_dir / rel)
    ids = [r.read_id for r in records]
    assert len(records) == facts["n_reads"]
    assert len(set(ids)) == len(ids)
    assert set(facts["read_ids_first2"]) <= set(ids)
    assert sum(r.num_samples for r in records) == facts["total_samples"]
    first = next(r for r in records if r.read_id == facts["read_ids_first2"][0])
    assert first.signal.dtype == np.int16
    assert first.num_samples == facts["first_read_samples"]
    assert [int(first.signal.min()), int(first.signal.max())] == facts["first_read_raw_min_max"]
    rates = sorted({r.sampling_rate for r in records if r.sampling_rate is not None})
    assert rates == [float(x) for x in sorted(facts["sampling_rate"])] if facts["sampling_rate"] else rates == []
    cal = facts.get("calibration_first_read") or {}
    if "digitisation" in cal:
        assert first.digitisation == cal["digitisation"]
        assert first.offset == cal["offset"]
        assert first.range == pytest.approx(cal["range"], rel=1e-12)
    if "scale" in cal:
        assert first.scale == pytest.approx(cal["scale"], rel=1e-12)
        assert first.offset == cal["offset"]
    stats = facts.get("first_read_pA_min_median_max")
    if stats:
        pa = first.signal_pa
        assert pa.dtype == np.float32
        got = [float(pa.min()), float(np.median(pa)), float(pa.max())]
        assert got == pytest.approx(stats, abs=1.5e-3)
    else:
        assert not first.has_calibration
        with pytest.raises(MissingCalibrationError, match="no calibration"):
            first.signal_pa


def _signals(path):
    return {r.read_id: r.signal for r in _read_all(path)}


@pytest.mark.parametrize("rel", sorted(k for k, v in EXPECTED.items() if v.get("same_reads_as")))
def test_same_reads_identical_across_formats(real_dir, expected, rel):
    mine = _signals(real_dir / rel)
    for twin in expected[rel]["same_reads_as"]:
        other = _signals(real_dir / twin["file"])
        shared = set(mine) & set(other)
        assert len(shared) == twin["shared_reads"]
        for read_id in shared:
            np.testing.assert_array_equal(mine[read_id], other[read_id])


def test_pa_agrees_across_formats(real_dir):
    group_b = ["slow5-pod5-bench/pod5/compat/file.fast5", "slow5-pod5-bench/pod5/compat/v3.pod5",
               "slow5-pod5-bench/slow5/compat/0.2.0.blow5"]
    reads = [{r.read_id: r.signal_pa for r in _read_all(real_dir / rel)} for rel in group_b]
    for read_id, pa in reads[0].items():
        for other in reads[1:]:
            np.testing.assert_allclose(other[read_id], pa, rtol=0, atol=1e-4)


def test_pod5_pa_equals_pod5_package(real_dir):
    import pod5

    path = real_dir / "test_datasets/pod5/PAM14583_ee1ba89e_88.pod5"
    mine = {r.read_id: r.signal_pa for r in _read_all(path)}
    with pod5.Reader(path) as reader:
        for read in reader.reads():
            np.testing.assert_allclose(mine[str(read.read_id)], read.signal_pa, rtol=1e-6, atol=1e-5)


def test_metadata(real_dir):
    (z2,) = _read_all(real_dir / "blue-crab/test/data/raw/p2s/pod5/z/z2.pod5")
    assert (z2.channel, z2.end_reason, z2.start_sample) == ("277", "mux_change", 1295872860)
    (fast5_v2,) = _read_all(real_dir / "slow5tools/test/data/raw/f2s/various_versions/single_fast5_v2.0.fast5")
    assert fast5_v2.end_reason == "signal_positive"  # older enum numbering (signal_positive=4) decoded by name
    rg = _read_all(real_dir / "slow5tools/test/data/exp/index/example_multi_rg_v0.2.0_zstd_svb-zd.blow5")
    assert len({r.run_id for r in rg}) > 1  # run ids come per read group


def test_directory_is_recursive_and_ignores_other_files(real_dir):
    folder = real_dir / "slow5tools/test/data/exp/one_fast5"
    records = _read_all(folder)
    assert len(records) == 5 and {r.read_id for r in records} == {"a649a4ae-c43d-492a-b6a1-a5b8b8076be4"}
    files = nst_hf.io.find_signal_files(real_dir)
    assert len(files) == 45


def test_read_ids_filter(real_dir):
    path = real_dir / "test_datasets/pod5/PAM14583_ee1ba89e_88.pod5"
    wanted = {"001a54f0-480c-4921-a9ac-bb56ac265b53"}
    for rel in ("test_datasets/pod5/PAM14583_ee1ba89e_88.pod5", "test_datasets/fast5/PAM14583_ee1ba89e_88.fast5"):
        with nst_hf.open_reads(real_dir / rel, read_ids=wanted) as source:
            assert [r.read_id for r in source] == sorted(wanted)


def test_slow5_reader_leaves_no_index_file(real_dir, tmp_path):
    import shutil

    copy = tmp_path / "b1.blow5"
    shutil.copy(real_dir / "blue-crab/test/data/exp/p2s/pod5-output/b1.blow5", copy)
    assert len(_read_all(copy)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1.blow5"]


_POD5_RECORDS = """
import json, sys
{first}
import pyarrow
from nst_hf.io import open_reads
with open_reads(sys.argv[1:], on_error="raise") as source:
    records = [[r.read_id, r.num_samples, int(r.signal.astype("int64").sum()), r.offset, r.range, r.digitisation,
                r.sampling_rate, r.channel, r.start_sample, r.end_reason, r.run_id] for r in source]
print(json.dumps({{"pandas": "pandas" in sys.modules, "scalar_restored": pyarrow.scalar is pyarrow.lib.scalar,
                  "records": records}}))
"""


def test_reading_pod5_does_not_import_pandas(real_dir):
    """pod5's import would pull in pandas (~0.6 s per process); the reads are the same without it."""
    import subprocess
    import sys

    files = sorted(str(p) for p in real_dir.rglob("*.pod5"))
    assert len(files) >= 5

    def run(first: str) -> dict:
        done = subprocess.run([sys.executable, "-c", _POD5_RECORDS.format(first=first), *files],
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    lean, with_pandas = run(""), run("import pandas")
    assert not lean["pandas"] and with_pandas["pandas"]
    assert lean["scalar_restored"] and with_pandas["scalar_restored"]
    assert len(lean["records"]) >= 20
    assert lean["records"] == with_pandas["records"]
