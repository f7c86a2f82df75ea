"""POD5 reader through ONT's ``pod5`` package.

POD5 stores calibration as ``offset`` and ``scale``; the FAST5-style ``digitisation`` is derived from
the run's ADC range and ``range = scale * digitisation``, so ``signal_pa`` is the same formula for
every format. Long reads span several signal rows; ``pod5`` joins them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nst_hf.errors import CorruptFileError, InvalidReadError, MissingDependencyError
from nst_hf.io.records import SignalRecord, utf8_path

# A Git LFS pointer file is about 130 bytes; a real POD5 is never that small.
_MIN_POD5_BYTES = 200


_IMPORT_LOCK = threading.Lock()


def _pod5():
    try:
        with _IMPORT_LOCK:
            if "pod5" in sys.modules or "pandas" in sys.modules:
                import pod5
            else:
                pod5 = _import_pod5_without_pandas()
    except ImportError as exc:  # pragma: no cover - pod5 is a core dependency
        raise MissingDependencyError("reading POD5 needs the `pod5` package: pip install pod5") from exc
    return pod5


def _import_pod5_without_pandas():
    """Import ``pod5`` without the pandas import it would trigger (~0.6 s and ~45 MiB RSS per process).

    ``pod5.reader`` makes one float32 scalar with ``pyarrow.scalar`` when it is imported, and pyarrow
    imports pandas on the first ``scalar`` call (to check whether the value is a pandas object).
    Reading POD5 never needs pandas. For the length of the import only, a float ``pyarrow.scalar``
    of type float32 is made from a buffer instead (the same scalar); every other call goes to pyarrow
    unchanged, and ``pyarrow.scalar`` is restored before this returns.
    """
    import pyarrow

    original = pyarrow.scalar
    float32 = pyarrow.float32()

    def scalar(value, type=None, **kwargs):
        if not kwargs and isinstance(value, float) and isinstance(type, pyarrow.DataType) and type.equals(float32):
            data = pyarrow.py_buffer(np.array([value], dtype=np.float32).tobytes())
            return pyarrow.Array.from_buffers(float32, 1, [None, data])[0]
        return original(value, type, **kwargs)

    pyarrow.scalar = scalar
    try:
        import pod5
    finally:
        pyarrow.scalar = original
    return pod5


def _record(read, path: str) -> SignalRecord:
    read_id = str(read.read_id)
    run_info = read.run_info
    digitisation = float(run_info.adc_max - run_info.adc_min + 1)
    scale = float(read.calibration.scale)
    return SignalRecord(
        read_id=read_id,
        signal=np.asarray(read.signal, dtype=np.int16),
        sampling_rate=float(run_info.sample_rate),
        offset=float(read.calibration.offset),
        range=scale * digitisation,
        digitisation=digitisation,
        source_file=path,
        channel=str(read.pore.channel),
        start_sample=int(read.start_sample),
        end_reason=read.end_reason.reason.name.lower(),
        run_id=str(run_info.acquisition_id),
    )


def iter_pod5(path: str | Path, read_ids: set[str] | None = None) -> Iterator[SignalRecord | InvalidReadError]:
    """Yield each read of a POD5 file as a record, or as an :class:`InvalidReadError` for a bad read."""
    pod5 = _pod5()
    path = os.fsdecode(path)
    if Path(path).stat().st_size < _MIN_POD5_BYTES:
        raise CorruptFileError(f"{path}: too small to be a POD5 file (a Git LFS pointer or a truncated file?)")
    with utf8_path(path) as readable:
        yield from _iter_pod5(pod5, path, readable, read_ids)


def _iter_pod5(pod5, path: str, readable: str, read_ids: set[str] | None) -> Iterator[SignalRecord | InvalidReadError]:
    try:
        reader = pod5.Reader(readable)
    except Exception as exc:  # pod5 raises RuntimeError/OSError/ArrowInvalid depending on the damage
        raise CorruptFileError(f"{path}: not a readable POD5 file ({type(exc).__name__}: {exc})") from exc
    with reader:
        damaged = _damaged_batches(reader, path)  # Arrow crashes (not raises) on some damaged batches
        selection = sorted(read_ids) if read_ids is not None else None
        delivered: set[str] = set()
        damage = None
        try:
            if damaged:
                for index, problem in damaged.items():
                    yield from _reads_of_damaged_batch(reader, index, problem, path, read_ids)
                good = [i for i in range(reader.read_table.num_record_batches) if i not in damaged]
                reads = (read for batch in reader.read_batches(batch_selection=good) for read in batch.reads()
                         if read_ids is None or str(read.read_id) in read_ids)
            else:
                reads = reader.reads(selection=selection, missing_ok=True)
            while True:
                try:
                    read = next(reads)
                except StopIteration:
                    break
                delivered.add(str(read.read_id))
                try:
                    yield _record(read, path)
                except Exception as exc:  # damaged signal rows of this one read
                    yield InvalidReadError(
                        f"{path}: read {read.read_id} is unreadable ({type(exc).__name__}: {exc})",
                        path=path, read_id=str(read.read_id),
                    )
        except Exception as exc:  # a damaged batch: nothing after it can be located reliably
            damage = exc
        if not damaged:  # listing the ids would touch the damaged batches again
            yield from _undelivered(reader, path, read_ids, delivered, damage)
        if damage is not None:
            raise CorruptFileError(f"{path}: POD5 read table is damaged ({type(damage).__name__}: {damage})") from damage


def _damaged_batches(reader, path: str) -> dict[int, str]:
    """Fully validate the file's Arrow tables: the read-table batches that fail, with why.

    A damaged run-info or signal table makes the whole file unreadable (:class:`CorruptFileError`).
    """
    for name in ("run_info_table", "signal_table"):
        table = getattr(reader, name)
        for index in range(table.num_record_batches):
            try:
                table.get_batch(index).validate(full=True)
            except Exception as exc:
                raise CorruptFileError(f"{path}: the POD5 {name.replace('_', ' ')} is damaged (batch {index}: "
                                       f"{type(exc).__name__}: {exc})") from exc
    damaged = {}
    table = reader.read_table
    for index in range(table.num_record_batches):
        try:
            table.get_batch(index).validate(full=True)
        except Exception as exc:
            damaged[index] = f"{type(exc).__name__}: {exc}"
    return damaged


def _reads_of_damaged_batch(reader, index: int, problem: str, path: str,
                            wanted: set[str] | None) -> Iterator[InvalidReadError]:
    """An error per read of a damaged read-table batch, by id where its read-id column is sound."""
    import uuid

    try:
        column = reader.read_table.get_batch(index).column("read_id")
        column.validate(full=True)
        ids = [str(uuid.UUID(bytes=value)) for value in column.to_pylist()]
    except Exception:
        raise CorruptFileError(f"{path}: POD5 read batch {index} is damaged, its read ids too ({problem})") from None
    for read_id in ids:
        if wanted is None or read_id in wanted:
            yield InvalidReadError(f"{path}: read {read_id} is unreadable: its POD5 read batch {index} is damaged "
                                   f"({problem})", path=path, read_id=read_id)


def _undelivered(reader, path: str, wanted: set[str] | None, delivered: set[str], damage) -> Iterator[InvalidReadError]:
    """An error for each read the file lists but ``pod5`` did not deliver (never a silent loss)."""
    try:
        listed = [str(read_id) for read_id in reader.read_ids]
    except Exception:  # the listing itself is damaged: the file-level error reports the rest
        return
    why = f"pod5 stopped before it ({type(damage).__name__}: {damage})" if damage else "pod5 did not deliver it"
    for read_id in listed:
        if read_id not in delivered and (wanted is None or read_id in wanted):
            yield InvalidReadError(f"{path}: read {read_id} is listed in the file but unreadable: {why}",
                                   path=path, read_id=read_id)
