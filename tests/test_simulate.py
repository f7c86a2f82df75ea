"""The shipped sample files are what the project's own simulator and writers produce."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

import nst_hf
from nst_hf.simulate import simulate_reads

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_sample_regenerates_exactly(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample_data", ROOT / "examples" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for name in ("sample.pod5", "sample.fast5"):
        shipped = {r.read_id: r.signal for r in nst_hf.open_reads(ROOT / "examples" / "data" / name)}
        fresh = {r.read_id: r.signal for r in nst_hf.open_reads(tmp_path / name)}
        assert shipped.keys() == fresh.keys() and len(shipped) == 8
        for read_id in shipped:
            np.testing.assert_array_equal(shipped[read_id], fresh[read_id])


def test_simulated_reads_look_like_nanopore_signal():
    records = simulate_reads(num_reads=4, min_samples=20000, max_samples=20000, seed=1)
    for record in records:
        pa = record.signal_pa
        assert 70 < np.median(pa) < 110  # typical open-channel-blocked current
        steps = np.abs(np.diff(pa)) > 12  # level changes, about 400 per second at 5 kHz
        assert 800 < steps.sum() < 2500
    assert len({r.read_id for r in records}) == 4
    again = simulate_reads(num_reads=4, min_samples=20000, max_samples=20000, seed=1)
    np.testing.assert_array_equal(records[0].signal, again[0].signal)
