"""Atomic writers for token outputs: JSON lines, gzip-compressed when the name ends in ``.gz``."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, data, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (plus a newline) atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


class AtomicJsonlWriter:
    """Write ``{"id", "text"}``-style records to ``path`` through a temporary file renamed on success.

    If the ``with`` block raises, the temporary file is removed and ``path`` is left untouched.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.count = 0
        self._handle = None

    def __enter__(self) -> AtomicJsonlWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = open(self.tmp, "wb")
        if self.path.name.endswith(".gz"):
            self._handle = gzip.open(raw, "wt", encoding="utf-8", compresslevel=6)
            self._raw = raw
        else:
            self._handle = open(raw.fileno(), "w", encoding="utf-8", closefd=False)
            self._raw = raw
        return self

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._handle.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
        finally:
            if exc_type is None:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file (gzip when the name ends in ``.gz``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
