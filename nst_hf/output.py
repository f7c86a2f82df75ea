"""Durable, atomic output: every file nst_hf writes goes through :func:`atomic_path`.

A file (or folder) is written under a temporary name beside its final path, flushed to disk, renamed
into place and the rename itself flushed, so a crash, a kill or a full disk never leaves a partial
file at the final path. Temporary names start with ``.`` and end in ``.tmp``
(:func:`temporary_name`), so a later run on the same output can find and remove what a killed
run left behind.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path


def printable_path(path: str | os.PathLike) -> str:
    """A path as text that JSON and terminals accept (undecodable bytes as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def temporary_name(path: str | os.PathLike, tag: str = "") -> Path:
    """``.<name>.<pid><tag>.tmp`` beside ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{tag}.tmp")


def is_temporary_name(name: str, of: str) -> bool:
    """Whether ``name`` is a :func:`temporary_name` of the file or folder named ``of``."""
    return re.fullmatch(rf"\.{re.escape(of)}\.\d+(\.old|\.done)?\.tmp", name) is not None


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or a folder's entries (after a rename or a removal inside it), to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                fsync_path(child)
    fsync_path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_path(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename ``source`` onto ``target`` and flush; a folder replaces a folder (the old one is removed after).

    A folder cannot be renamed over another, so the old one is moved aside first; if the second
    rename fails it is moved back, and SIGINT/SIGTERM wait until both renames are done.
    """
    source, target = Path(source), Path(target)
    if not (target.is_dir() and not target.is_symlink()):
        os.replace(source, target)
        fsync_path(target.parent if str(target.parent) else ".")
        return
    old = temporary_name(target, ".old")
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        os.replace(target, old)
        try:
            os.replace(source, target)
        except BaseException:
            os.replace(old, target)
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    fsync_path(target.parent if str(target.parent) else ".")
    _remove(old)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; on success it is flushed and renamed into place.

    On any error the temporary file or folder is removed and ``path`` is left as it was. An
    ``OSError`` while writing (a full disk, a file-size limit) is re-raised naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync_tree(tmp)
        replace_path(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if exc.errno is not None and exc.filename is None and type(exc) in (OSError, IOError):
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    except BaseException:
        _remove(tmp)
        raise


def append_file(source: str | os.PathLike, handle) -> None:
    """Append the bytes of the file ``source`` to the binary file ``handle``, copied by the kernel
    (``os.sendfile``) where it can, else through a buffer."""
    with open(source, "rb") as reader:
        handle.flush()
        size, copied = os.fstat(reader.fileno()).st_size, 0
        try:
            while copied < size:
                sent = os.sendfile(handle.fileno(), reader.fileno(), copied, size - copied)
                if sent == 0:
                    break
                copied += sent
        except (AttributeError, OSError):  # no sendfile to this kind of file: copy the rest by hand
            pass
        handle.seek(0, os.SEEK_END)  # the kernel moved the file's offset, not the handle's
        if copied < size:
            reader.seek(copied)
            shutil.copyfileobj(reader, handle, 1 << 20)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, data, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (plus a newline) atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def open_jsonl_for_writing(path: str | os.PathLike, compressed: bool):
    """A text handle writing JSON lines to ``path``; gzip without a timestamp, so reruns give the same bytes."""
    if not compressed:
        return open(path, "w", encoding="utf-8")
    raw = open(path, "wb")
    try:
        return _GzipText(raw)
    except BaseException:
        raw.close()
        raise


class _GzipText:
    """A gzip text writer that also closes its underlying file."""

    def __init__(self, raw):
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0, filename="")

    def write(self, text: str) -> int:
        return self._gzip.write(text.encode("utf-8"))

    def close(self) -> None:
        try:
            self._gzip.close()
        finally:
            self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AtomicWriter:
    """A ``with`` block writing one file through :func:`atomic_path`: subclasses open the temporary
    file in ``_open(tmp)`` and finish it in ``_close()``. If the block (or the last flush) fails, the
    temporary file is removed and the final path is left untouched."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._context = None

    def _open(self, tmp: Path) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._context = atomic_path(self.path)
        tmp = self._context.__enter__()
        try:
            self._open(tmp)
        except BaseException as exc:
            self._context.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self._close()
        except BaseException as close_error:  # e.g. a full disk at the last flush
            if exc is None:
                self._context.__exit__(type(close_error), close_error, close_error.__traceback__)
                raise
        return self._context.__exit__(exc_type, exc, tb)


class AtomicJsonlWriter(AtomicWriter):
    """Write ``{"id", "text"}``-style records to ``path`` (gzip when it ends in ``.gz``), atomically."""

    def __init__(self, path: str | os.PathLike, compressed: bool | None = None):
        super().__init__(path)
        self.compressed = self.path.name.endswith(".gz") if compressed is None else compressed
        self.count = 0
        self._handle = None

    def _open(self, tmp: Path) -> None:
        self._handle = open_jsonl_for_writing(tmp, self.compressed)

    def _close(self) -> None:
        self._handle.close()

    def write(self, record: dict) -> None:
        """Write ``record`` as one line, the same text as ``json.dumps(record, ensure_ascii=False)``."""
        self._handle.write(json_line(record))
        self.count += 1


#: Strings at least this long are checked for characters JSON must escape instead of being escaped.
_PLAIN_MIN_CHARS = 4096


def _needs_no_escape(text: str) -> bool:
    """Whether JSON writes ``text`` as it is: ASCII without ``"``, ``\\`` or control characters (< 0x20).

    Token text is such a string: these checks (``isascii`` is a flag, ``in`` a memchr, the control
    characters one NumPy minimum) take ~10 ms per 40 MB where ``json.dumps`` scans at ~160 ms.
    """
    import numpy as np

    return (text.isascii() and '"' not in text and "\\" not in text
            and int(np.frombuffer(text.encode("ascii"), dtype=np.uint8).min()) >= 0x20)


def json_line(record: dict) -> str:
    """``json.dumps(record, ensure_ascii=False) + "\\n"``, byte for byte, with long plain strings (the token
    text of a read) copied rather than scanned character by character."""
    if not all(type(key) is str for key in record):
        return json.dumps(record, ensure_ascii=False) + "\n"
    fields = []
    for key, value in record.items():
        if type(value) is str and len(value) >= _PLAIN_MIN_CHARS and _needs_no_escape(value):
            encoded = '"' + value + '"'
        else:
            encoded = json.dumps(value, ensure_ascii=False)
        fields.append(json.dumps(key, ensure_ascii=False) + ": " + encoded)
    return "{" + ", ".join(fields) + "}\n"


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file (gzip when the name ends in ``.gz``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
