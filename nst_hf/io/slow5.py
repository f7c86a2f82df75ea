"""SLOW5 / BLOW5 reader through ``pyslow5``.

pyslow5 can kill the process (segfault) instead of raising on a file it does not understand, e.g. a
BLOW5 whose header version is newer than it supports or a truncated BLOW5. The header and the EOF
marker are therefore checked here before the file is handed to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nst_hf.errors import CorruptFileError, InvalidReadError, MissingDependencyError, UnsupportedFormatError
from nst_hf.io._attrs import as_float, as_int, as_str
from nst_hf.io.records import SignalRecord

logger = logging.getLogger(__name__)

BLOW5_MAGIC = b"BLOW5\x01"
BLOW5_EOF = b"5WOLB"
#: Newest SLOW5/BLOW5 format version pyslow5 1.x reads safely.
MAX_SUPPORTED_VERSION = (0, 2, 0)


def _pyslow5():
    try:
        import pyslow5
    except ImportError as exc:  # pragma: no cover - pyslow5 is a core dependency
        raise MissingDependencyError("reading SLOW5/BLOW5 needs the `pyslow5` package: pip install pyslow5") from exc
    return pyslow5


def check_header(path: str | Path) -> tuple[int, int, int]:
    """Validate a SLOW5/BLOW5 header without pyslow5 and return its format version.

    Raises :class:`CorruptFileError` for a damaged or truncated file and
    :class:`UnsupportedFormatError` for a version newer than :data:`MAX_SUPPORTED_VERSION`.
    """
    path = str(path)
    with open(path, "rb") as handle:
        head = handle.read(64)
        if path.endswith(".blow5"):
            if not head.startswith(BLOW5_MAGIC) or len(head) < 64:
                raise CorruptFileError(f"{path}: not a BLOW5 file (bad magic bytes or header shorter than 64 bytes)")
            version = tuple(head[6:9])
            handle.seek(0, os.SEEK_END)
            if handle.tell() < 64 + len(BLOW5_EOF):
                raise CorruptFileError(f"{path}: BLOW5 file is truncated (no records, no end-of-file marker)")
            handle.seek(-len(BLOW5_EOF), os.SEEK_END)
            if handle.read(len(BLOW5_EOF)) != BLOW5_EOF:
                raise CorruptFileError(f"{path}: BLOW5 file is truncated or damaged (end-of-file marker '5WOLB' missing)")
        else:
            first_line = head.split(b"\n", 1)[0].decode("ascii", errors="replace")
            fields = first_line.split("\t")
            if len(fields) != 2 or fields[0] != "#slow5_version":
                raise CorruptFileError(f"{path}: not a SLOW5 file (first line is not '#slow5_version<TAB>x.y.z')")
            try:
                version = tuple(int(part) for part in fields[1].strip().split("."))
            except ValueError as exc:
                raise CorruptFileError(f"{path}: unreadable SLOW5 version {fields[1]!r}") from exc
    if len(version) != 3 or version > MAX_SUPPORTED_VERSION:
        raise UnsupportedFormatError(
            f"{path}: SLOW5/BLOW5 version {'.'.join(map(str, version))} is newer than the supported "
            f"{'.'.join(map(str, MAX_SUPPORTED_VERSION))}; convert it with a matching slow5tools "
            "(`slow5tools view`) or upgrade pyslow5 and nst_hf"
        )
    return version  # type: ignore[return-value]


def _enum_labels(handle) -> list[str] | None:
    if "end_reason" not in (handle.get_aux_names() or []):
        return None
    return [as_str(label) for label in handle.get_aux_enum_labels("end_reason")]


def _record(row: dict, path: str, labels, run_ids) -> SignalRecord:
    read_id = as_str(row["read_id"])
    end_reason = row.get("end_reason")
    if end_reason is not None:
        code = int(end_reason)
        end_reason = labels[code] if labels and 0 <= code < len(labels) else (None if code == 255 else str(code))
    return SignalRecord(
        read_id=read_id,
        signal=np.asarray(row["signal"], dtype=np.int16),
        sampling_rate=as_float(row.get("sampling_rate")),
        offset=as_float(row.get("offset")),
        range=as_float(row.get("range")),
        digitisation=as_float(row.get("digitisation")),
        source_file=path,
        channel=as_str(row.get("channel_number")),
        start_sample=as_int(row.get("start_time")),
        end_reason=end_reason,
        run_id=run_ids.get(int(row.get("read_group", 0))),
    )


def iter_slow5(path: str | Path, read_ids: set[str] | None = None) -> Iterator[SignalRecord | InvalidReadError]:
    """Yield each read of a SLOW5/BLOW5 file as a record, or as an :class:`InvalidReadError`.

    Streams sequentially (no ``.idx`` file is created next to the data).
    """
    path = str(path)
    check_header(path)
    pyslow5 = _pyslow5()
    try:
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            handle = pyslow5.Open(path, "r")
    except Exception as exc:
        raise CorruptFileError(f"{path}: pyslow5 cannot open it ({type(exc).__name__}: {exc})") from exc
    try:
        labels = _enum_labels(handle)
        run_ids = {}
        for group in range(handle.get_num_read_groups()):
            run_ids[group] = as_str(handle.get_header_value("run_id", group)) or None
        aux = "all" if handle.get_aux_names() else None
        rows = handle.seq_reads(pA=False, aux=aux)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except Exception as exc:
                raise CorruptFileError(f"{path}: damaged record ({type(exc).__name__}: {exc})") from exc
            if not isinstance(row, dict) or "read_id" not in row:
                raise CorruptFileError(f"{path}: damaged record (pyslow5 returned {type(row).__name__})")
            read_id = as_str(row["read_id"])
            if read_ids is not None and read_id not in read_ids:
                continue
            try:
                yield _record(row, path, labels, run_ids)
            except Exception as exc:
                yield InvalidReadError(f"{path}: read {read_id} is unreadable ({exc})", path=path, read_id=read_id)
    finally:
        handle.close()
