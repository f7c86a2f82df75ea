"""Readers for FAST5, POD5 and SLOW5/BLOW5, behind one entry point: :func:`open_reads`."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nst_hf.errors import CorruptFileError, InvalidReadError, NstHfError, UnsupportedFormatError
from nst_hf.io.records import SignalRecord, calibrate

logger = logging.getLogger(__name__)

__all__ = ["SignalRecord", "calibrate", "open_reads", "ReadSource", "SkippedRead", "SUFFIXES", "find_signal_files",
           "prepare_to_read", "prepare_readers"]


def _fast5(path, read_ids):
    from nst_hf.io.fast5 import iter_fast5

    return iter_fast5(path, read_ids)


def _pod5(path, read_ids):
    from nst_hf.io.pod5 import iter_pod5

    return iter_pod5(path, read_ids)


def _slow5(path, read_ids):
    from nst_hf.io.slow5 import iter_slow5

    return iter_slow5(path, read_ids)


#: File name suffix → reader function.
SUFFIXES: dict[str, Callable] = {".fast5": _fast5, ".pod5": _pod5, ".slow5": _slow5, ".blow5": _slow5}


def prepare_to_read(path: str | os.PathLike) -> None:
    """Begin in the background the check that reading ``path`` starts with, so that it overlaps the work on
    the file before: for SLOW5/BLOW5, the helper process that opens each file before pyslow5 may
    (:mod:`nst_hf.io._slow5_probe`). Other formats need nothing."""
    if Path(os.fsdecode(path)).suffix.lower() in (".slow5", ".blow5"):
        from nst_hf.io.slow5 import request_probe

        request_probe(path)


def _import_reader_libraries(suffixes: set[str]) -> None:
    try:
        if ".fast5" in suffixes:
            from nst_hf.io.fast5 import _h5py

            _h5py()
        if ".pod5" in suffixes:
            from nst_hf.io.pod5 import _pod5

            _pod5()
    except Exception:  # noqa: BLE001 - the first read of such a file raises it again, with its file named
        logger.debug("importing a reader library ahead failed", exc_info=True)


def prepare_readers(paths: Iterable[str | os.PathLike]) -> threading.Thread | None:
    """Begin in the background what the first reads of ``paths`` (in this order) wait for: the probe of the
    first SLOW5/BLOW5 file (its helper process starts and imports pyslow5), and the import of h5py and pod5
    on a daemon thread (~0.1 s each) when FAST5 or POD5 files are among them. A run calls it before its
    first read; a failure is left for that file's read to report. Returns the import thread, if any."""
    paths = list(paths)
    suffixes = [Path(os.fsdecode(path)).suffix.lower() for path in paths]
    first_slow5 = next((path for path, suffix in zip(paths, suffixes) if suffix in (".slow5", ".blow5")), None)
    if first_slow5 is not None:
        prepare_to_read(first_slow5)
    wanted = {suffix for suffix in suffixes if suffix in (".fast5", ".pod5")}
    if not wanted:
        return None
    thread = threading.Thread(target=_import_reader_libraries, args=(wanted,), name="nst_hf-reader-imports",
                              daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class SkippedRead:
    """A read (or a whole file, when ``read_id`` is ``None``) that was skipped, and why."""

    file: str
    read_id: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"file": self.file, "read_id": self.read_id, "reason": self.reason}


def _walk(directory: Path) -> Iterator[Path]:
    """Files below ``directory``, sorted, following symlinked directories once each (loop-safe)."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(directory, followlinks=True):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in seen:
            logger.warning("not following %s again: it leads back to a directory already searched", root)
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def find_signal_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and directories (recursively, sorted) into the signal files nst_hf can read.

    A file given explicitly must have a supported suffix; files inside directories without one are
    ignored (logged at DEBUG). Symlinked directories are followed once each. A file reached twice
    (the same path, a symlink to it or a hard link) is kept once, with a warning.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    identities: dict[tuple[int, int], Path] = {}

    def add(path: Path) -> None:
        stat = path.stat()
        identity = (stat.st_dev, stat.st_ino)
        if identity in identities:
            logger.warning("ignoring %s: the same file as %s, which is read already", path, identities[identity])
            return
        identities[identity] = path
        found.append(path)

    for item in paths:
        path = Path(os.fsdecode(item))
        if path.is_dir():
            for child in _walk(path):
                if child.suffix.lower() in SUFFIXES and child.is_file():
                    add(child)
                else:
                    logger.debug("ignoring non-signal file %s", child)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise UnsupportedFormatError(
                    f"{path}: unknown signal file extension {path.suffix!r}; supported: {', '.join(SUFFIXES)}"
                )
            add(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return found


def validate_record(record: SignalRecord) -> SignalRecord:
    """Check one read; raise :class:`InvalidReadError` naming the file, the read and the problem."""

    def bad(problem: str) -> InvalidReadError:
        return InvalidReadError(f"{record.source_file}: read {record.read_id}: {problem}",
                                path=record.source_file, read_id=record.read_id)

    if record.signal.ndim != 1 or record.signal.size == 0:
        raise bad("empty signal (0 samples)")
    if record.sampling_rate is not None and not (np.isfinite(record.sampling_rate) and record.sampling_rate > 0):
        raise bad(f"invalid sampling rate {record.sampling_rate!r}")
    if record.has_calibration:
        if record.digitisation == 0:
            raise bad("digitisation is 0, so pA = (raw + offset) * range / digitisation is undefined")
        if not all(np.isfinite(v) for v in (record.offset, record.range, record.digitisation)):
            raise bad(f"non-finite calibration (offset={record.offset}, range={record.range}, "
                      f"digitisation={record.digitisation}) would give NaN/inf pA")
    return record


class ReadSource:
    """Iterator over the reads of one or more files; also a context manager.

    ``skipped`` lists every :class:`SkippedRead` seen so far when ``on_error="skip"``; ``file_number`` is the
    index in ``files`` of the file the last read came from.
    """

    def __init__(self, paths, read_ids: Iterable[str] | None = None, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.files = find_signal_files(paths)
        self.read_ids = set(read_ids) if read_ids is not None else None
        self.on_error = on_error
        self.skipped: list[SkippedRead] = []
        self.reads_yielded = 0
        self.file_number = -1  # index in ``files`` of the file being read
        self._iterator: Iterator[SignalRecord] | None = None

    def __enter__(self) -> ReadSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file currently open (if any)."""
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
            self._iterator = None

    def __iter__(self) -> Iterator[SignalRecord]:
        if self._iterator is None:
            self._iterator = self._generate()
        return self._iterator

    def __next__(self) -> SignalRecord:
        return next(iter(self))

    def _skip(self, file: str, read_id: str | None, error: Exception) -> None:
        reason = str(error)
        logger.warning("skipping %s: %s", f"read {read_id}" if read_id else f"file {file}", reason)
        self.skipped.append(SkippedRead(file=file, read_id=read_id, reason=reason))

    def _generate(self) -> Iterator[SignalRecord]:
        for number, path in enumerate(self.files):
            self.file_number = number
            following = self.files[number + 1] if number + 1 < len(self.files) else None
            reader = SUFFIXES[path.suffix.lower()]
            try:
                for item in reader(path, self.read_ids):
                    if following is not None:  # this file's own check is done: begin the next one's
                        prepare_to_read(following)
                        following = None
                    if isinstance(item, InvalidReadError):
                        if self.on_error == "raise":
                            raise item
                        self._skip(str(path), item.read_id, item)
                        continue
                    try:
                        record = validate_record(item)
                    except InvalidReadError as exc:
                        if self.on_error == "raise":
                            raise
                        self._skip(str(path), item.read_id, exc)
                        continue
                    self.reads_yielded += 1
                    yield record
            except InvalidReadError:
                raise
            except (NstHfError, OSError, RuntimeError, ValueError, KeyError, MemoryError) as error:
                if isinstance(error, FileNotFoundError) and not os.path.exists(path):
                    raise
                exc = error if isinstance(error, NstHfError) else \
                    CorruptFileError(f"{path}: unreadable ({type(error).__name__}: {error})")  # a library's own error
                if self.on_error == "raise":
                    raise exc from (None if exc is error else error)
                self._skip(str(path), None, exc)


def open_reads(path, read_ids: Iterable[str] | None = None, on_error: str = "raise") -> ReadSource:
    """Stream the reads of a ``.fast5``, ``.pod5``, ``.slow5`` or ``.blow5`` file or a directory of them.

    Parameters
    ----------
    path : str | PathLike | list
        A file, a directory (searched recursively) or a list of both.
    read_ids : iterable of str, optional
        Only yield these reads.
    on_error : {"raise", "skip"}
        ``"raise"`` (default) raises an :mod:`nst_hf.errors` exception naming the file, the read and
        the problem. ``"skip"`` logs a warning, skips only the bad read (or unreadable file) and
        records it in ``source.skipped``.

    Returns
    -------
    ReadSource
        Iterable of :class:`SignalRecord`; use it as a context manager. Memory holds one read at a time.
    """
    return ReadSource(path, read_ids=read_ids, on_error=on_error)
