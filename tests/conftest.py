"""Shared fixtures: paths into ../shared (CI has it beside the clone) and small generated files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "data" / "real"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: the shared test data must sit beside the checkout (../shared)")
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
