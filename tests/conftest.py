"""Shared fixtures: paths into ../shared (CI has it beside the clone) and small generated files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "data" / "real"


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"{path} not found: the shared test data must sit beside the checkout (../shared)"
        if os.environ.get("CI") or os.environ.get("NST_HF_REQUIRE_SHARED") == "1":
            pytest.fail(message + "; CI needs it, so this test fails instead of skipping")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def real_dir() -> Path:
    return _require(REAL)


@pytest.fixture(scope="session")
def expected(real_dir) -> dict:
    return json.loads((real_dir / "expected.json").read_text())


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


CHECKPOINTS = SHARED / "fixtures" / "checkpoints"
PARITY = SHARED / "fixtures" / "parity"


@pytest.fixture(scope="session")
def checkpoints() -> Path:
    return _require(CHECKPOINTS)


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return _require(PARITY)


@pytest.fixture(scope="session")
def upstream_dir() -> Path:
    return _require(SHARED / "data" / "upstream")


@pytest.fixture(scope="session")
def vq1(checkpoints):
    import nst_hf

    return nst_hf.NstVQTokenizer.from_pretrained(checkpoints / "vq_cnn1_cb8192.pth")


@pytest.fixture(scope="session")
def rvq(checkpoints):
    import nst_hf

    return nst_hf.NstRVQTokenizer.from_pretrained(checkpoints / "rvq_nq4_cb1024.pth")


@pytest.fixture(scope="session")
def kmeans(upstream_dir):
    import nst_hf

    return nst_hf.NstKMeansTokenizer.from_pretrained(upstream_dir / "centroids.npy", stride=8)


@pytest.fixture(scope="session")
def demo_reads(upstream_dir):
    import nst_hf

    with nst_hf.open_reads(upstream_dir / "demo.fast5") as source:
        return list(source)
