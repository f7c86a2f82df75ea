"""SLOW5 / BLOW5 reader through ``pyslow5``.

pyslow5 can kill the process on a malformed header, and it ends its iteration silently at the first
record it cannot parse. So every file is first scanned without it (:mod:`nst_hf.io.slow5_layout`):
the header is checked field by field and every record located. pyslow5 then reads the file itself
when it is intact, or a temporary copy holding only the well-formed records when it is not; when
pyslow5 stops before the last record, that record is reported by read id and reading resumes from
the next one. Every record a file holds is therefore either delivered or reported.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from nst_hf.errors import CorruptFileError, InvalidReadError, MissingDependencyError
from nst_hf.io._attrs import as_float, as_int, as_str
from nst_hf.io._slow5_probe import Slow5Prober
from nst_hf.io.records import SignalRecord, utf8_path
from nst_hf.io.slow5_layout import BLOW5_EOF, MAX_SUPPORTED_VERSION, RecordSpan, Slow5Layout, scan

logger = logging.getLogger(__name__)

__all__ = ["iter_slow5", "check_header", "request_probe", "MAX_SUPPORTED_VERSION"]

#: After this many records that pyslow5 cannot parse, the rest of the file is reported unread
#: (each restart copies the rest of the file).
MAX_RESTARTS = 100
#: ... and after this many in a row.
MAX_EMPTY_PASSES = 3
#: Opens each file in a helper process first, so damage the checks miss cannot crash this process.
_PROBER = Slow5Prober()


def _pyslow5():
    try:
        import pyslow5
    except ImportError as exc:  # pragma: no cover - pyslow5 is a core dependency
        raise MissingDependencyError("reading SLOW5/BLOW5 needs the `pyslow5` package: pip install pyslow5") from exc
    return pyslow5


def request_probe(path: str | os.PathLike) -> None:
    """Have the probe helper open ``path`` now, in the background, so that reading it later only collects the
    answer (a run calls it for the next file while it works on the current one)."""
    path = os.fsdecode(path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # read through a link with another name: nothing to gain
        return
    _PROBER.request(path)


def check_header(path: str | Path) -> tuple[int, int, int]:
    """Validate a SLOW5/BLOW5 header without pyslow5 and return its format version.

    Raises :class:`CorruptFileError` for a damaged header and :class:`UnsupportedFormatError` for
    a version newer than :data:`MAX_SUPPORTED_VERSION`.
    """
    return scan(path).version


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


def _copy_range(source, target, start: int, end: int) -> None:
    source.seek(start)
    remaining = end - start
    while remaining:
        chunk = source.read(min(remaining, 1 << 20))
        if not chunk:
            raise CorruptFileError(f"{source.name}: the file shrank while it was being read")
        target.write(chunk)
        remaining -= len(chunk)


@contextmanager
def _readable_copy(layout: Slow5Layout, records: list[RecordSpan], whole_file: bool) -> Iterator[str]:
    """A path pyslow5 can open holding the header and ``records``: the file itself when it is intact
    (through a link when its name is not valid UTF-8), else a temporary copy of those records."""
    if whole_file:
        with utf8_path(layout.path) as path:
            yield path
        return
    folder = tempfile.mkdtemp(prefix="nst_hf_slow5_")
    target = os.path.join(folder, "reads" + Path(layout.path).suffix)
    try:
        with open(layout.path, "rb") as source, open(target, "wb") as out:
            _copy_range(source, out, 0, layout.header_end)
            for record in records:
                _copy_range(source, out, record.start, record.end)
            if layout.binary:
                out.write(BLOW5_EOF)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bad_read(path: str, record: RecordSpan, problem: str) -> InvalidReadError:
    name = f"read {record.read_id}" if record.read_id else f"record {record.index + 1} (read id unreadable)"
    return InvalidReadError(f"{path}: {name} is unreadable: {problem}", path=path, read_id=record.read_id)


def _open(pyslow5, path: str):
    """Open with pyslow5 and read what every record needs from the header; raises on failure."""
    handle = pyslow5.Open(path, "r")
    try:
        labels = _enum_labels(handle)
        run_ids = {group: as_str(handle.get_header_value("run_id", group)) or None
                   for group in range(handle.get_num_read_groups())}
        aux = "all" if handle.get_aux_names() else None
    except BaseException:
        handle.close()
        raise
    return handle, labels, run_ids, aux


def _rows(opened) -> Iterator[tuple[dict, list[str] | None, dict]]:
    handle, labels, run_ids, aux = opened
    try:
        for row in handle.seq_reads(pA=False, aux=aux):
            yield row, labels, run_ids
    finally:
        handle.close()


def _one_pass(path: str, pyslow5, layout: Slow5Layout, pending: list[RecordSpan], whole_file: bool, probe: bool,
              read_ids: set[str] | None):
    """Read ``pending`` records with pyslow5 until it stops; yield each read (or its error) and return
    ``(records delivered, why it stopped)``."""
    delivered, failure = 0, "pyslow5 stopped reading the file before this record"
    with _readable_copy(layout, pending, whole_file) as readable:
        crash = _PROBER.probe(readable) if probe else None
        if crash:
            raise CorruptFileError(f"{path}: {crash}; skipped")
        try:
            opened = _open(pyslow5, readable)
        except Exception as exc:
            raise CorruptFileError(f"{path}: pyslow5 cannot open it ({type(exc).__name__}: {exc})") from exc
        try:
            for row, labels, run_ids in _rows(opened):
                expected = pending[min(delivered, len(pending) - 1)]
                delivered += 1
                if not isinstance(row, dict) or "read_id" not in row:
                    yield _bad_read(path, expected, f"pyslow5 returned {type(row).__name__}")
                    continue
                read_id = as_str(row["read_id"])
                if read_ids is not None and read_id not in read_ids:
                    continue
                try:
                    yield _record(row, path, labels, run_ids)
                except Exception as exc:
                    yield InvalidReadError(f"{path}: read {read_id} is unreadable ({exc})", path=path, read_id=read_id)
        except Exception as exc:  # pyslow5 raises several kinds; each one ends its iteration
            failure = f"pyslow5 failed on it ({type(exc).__name__}: {exc})"
    return delivered, failure


def iter_slow5(path: str | Path, read_ids: set[str] | None = None) -> Iterator[SignalRecord | InvalidReadError]:
    """Yield each read of a SLOW5/BLOW5 file as a record, or as an :class:`InvalidReadError`.

    Streams sequentially (no ``.idx`` file is created next to the data). Raises
    :class:`CorruptFileError` for a damaged header or one pyslow5 cannot open, and after the last
    whole record when the file is truncated or damaged past the point where records can be found.
    """
    path = os.fsdecode(path)
    layout = scan(path)
    pyslow5 = _pyslow5()

    def wanted(record: RecordSpan) -> bool:  # a record without a readable id may be any read: report it
        return read_ids is None or record.read_id is None or record.read_id in read_ids

    for record, problem in layout.bad_records:
        if wanted(record):
            yield _bad_read(path, record, problem)
    pending, whole_file, restarts, empty_passes = layout.records, layout.intact, 0, 0
    while pending:
        delivered, failure = yield from _one_pass(path, pyslow5, layout, pending, whole_file, restarts == 0, read_ids)
        if delivered >= len(pending):
            break
        failed, pending, whole_file = pending[delivered], pending[delivered + 1:], False
        if wanted(failed):
            yield _bad_read(path, failed, failure)
        restarts += 1
        empty_passes = empty_passes + 1 if delivered == 0 else 0
        if restarts >= MAX_RESTARTS or empty_passes >= MAX_EMPTY_PASSES:
            why = (f"{MAX_EMPTY_PASSES} records in a row" if empty_passes >= MAX_EMPTY_PASSES
                   else f"{MAX_RESTARTS} records in this file")
            for record in pending:
                if wanted(record):
                    yield _bad_read(path, record, f"not read: pyslow5 could not parse {why}")
            break
        logger.debug("%s: pyslow5 stopped at record %d; reading on from the next one", path, failed.index + 1)
    if layout.damage:
        raise CorruptFileError(f"{path}: {layout.damage}")
