"""``datasets`` integration: reads → a streaming-built ``Dataset``, and the ``map(batched=True)`` function.

The same batch function runs under Ray Data ``map_batches`` (see :mod:`nst_hf.ray`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable

import numpy as np

from nst_hf.errors import NstHfError
from nst_hf.io import SignalRecord, find_signal_files, open_reads
from nst_hf.tokenizers.vocab import codes_to_ids, codes_to_text

logger = logging.getLogger(__name__)

#: Columns written by :func:`reads_to_dataset` ("FAST5-derived columns").


def read_features():
    """``datasets.Features`` that keep the raw signal as int16 and the calibration as float64."""
    from datasets import Features, List, Value

    return Features({
        "read_id": Value("string"), "signal": List(Value("int16")), "offset": Value("float64"),
        "range": Value("float64"), "digitisation": Value("float64"), "sampling_rate": Value("float64"),
        "source_file": Value("string"),
    })


def _generate_reads(files: list[str], read_ids: list[str] | None, on_error: str):
    with open_reads(files, read_ids=read_ids, on_error=on_error) as source:
        for record in source:
            yield {"read_id": record.read_id, "signal": record.signal, "offset": record.offset,
                   "range": record.range, "digitisation": record.digitisation,
                   "sampling_rate": record.sampling_rate, "source_file": record.source_file}


def _fingerprint(files: list[str], read_ids, on_error: str) -> str:
    digest = hashlib.sha256()
    for file in files:
        stat = os.stat(file)
        digest.update(f"{os.path.abspath(file)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(repr((sorted(read_ids) if read_ids else None, on_error)).encode())
    return digest.hexdigest()[:32]


def reads_to_dataset(paths, read_ids: Iterable[str] | None = None, on_error: str = "raise",
                     num_proc: int | None = None, writer_batch_size: int = 64, cache_dir: str | None = None):
    """Build a ``datasets.Dataset`` of reads from FAST5/POD5/SLOW5/BLOW5 files or directories.

    Reads stream from a generator into Arrow (memory stays bounded by ``writer_batch_size`` reads).
    The fingerprint comes from the files' paths, sizes and modification times, so a changed file is
    never served from a stale cache. With ``on_error="skip"`` bad reads are logged and left out.
    """
    from datasets import Dataset

    from datasets.exceptions import DatasetGenerationError

    files = [str(p) for p in find_signal_files(paths)]
    read_ids = sorted(read_ids) if read_ids is not None else None
    try:
        return Dataset.from_generator(
            _generate_reads, features=read_features(), gen_kwargs={"files": files, "read_ids": read_ids,
                                                                   "on_error": on_error},
            num_proc=num_proc, writer_batch_size=writer_batch_size, cache_dir=cache_dir,
            fingerprint=_fingerprint(files, read_ids, on_error),
        )
    except DatasetGenerationError as exc:  # datasets wraps the reader's error: surface nst_hf's own
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, NstHfError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause.with_traceback(None) from None


def _limit_threads_in_worker(num_threads: int | None) -> None:
    """Avoid the fork-after-OpenMP deadlock: one thread per worker unless told otherwise."""
    try:
        import multiprocess

        in_worker = multiprocess.parent_process() is not None
    except ImportError:  # pragma: no cover - datasets always ships multiprocess
        in_worker = False
    if num_threads is None and not in_worker:
        return
    threads = num_threads or 1
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass


def _column(batch, name, size):
    values = batch.get(name) if hasattr(batch, "get") else None
    if values is None:
        return [None] * size
    return list(values)


def _as_float(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def batch_to_records(batch) -> list[SignalRecord]:
    """Rows of a batch (``dict`` of lists or NumPy arrays) → records with calibration.

    Accepts the columns of :func:`reads_to_dataset`, or ``read_id`` + a float ``signal_pa`` column
    (offset 0, scale 1).
    """
    ids = list(batch["read_id"])
    rates = _column(batch, "sampling_rate", len(ids))
    sources = _column(batch, "source_file", len(ids))
    records = []
    if "signal_pa" in batch and "signal" not in batch:
        for read_id, pa, rate, source in zip(ids, batch["signal_pa"], rates, sources):
            pa = np.asarray(pa, dtype=np.float32)
            records.append(_PaRecord(read_id=str(read_id), signal=np.zeros(0, np.int16), sampling_rate=_as_float(rate),
                                     offset=0.0, range=1.0, digitisation=1.0, source_file=source or "", extra={"pa": pa}))
        return records
    for read_id, raw, offset, range_, dig, rate, source in zip(
            ids, batch["signal"], _column(batch, "offset", len(ids)), _column(batch, "range", len(ids)),
            _column(batch, "digitisation", len(ids)), rates, sources):
        records.append(SignalRecord(read_id=str(read_id), signal=np.asarray(raw), sampling_rate=_as_float(rate),
                                    offset=_as_float(offset), range=_as_float(range_), digitisation=_as_float(dig),
                                    source_file=source or ""))
    return records


class _PaRecord(SignalRecord):
    """A record that already holds its pA signal (from a ``signal_pa`` column)."""

    @property
    def signal_pa(self):
        return self.extra["pa"]

    @property
    def num_samples(self) -> int:
        return int(self.extra["pa"].shape[0])


def tokenize_batch(batch, tokenizer, token_type: str | None = None, return_ids: bool = False,
                   on_error: str = "raise", num_threads: int | None = None, resample: bool = False) -> dict:
    """``datasets.map(batched=True)`` / Ray ``map_batches`` function: read columns → ``id`` and ``text``.

    One output row per input row. With ``on_error="skip"`` a bad read gets empty text and the
    ``error`` column says why (empty string for good reads). Usage::

        ds.map(tokenize_batch, batched=True, fn_kwargs={"tokenizer": tok}, remove_columns=ds.column_names)

    Inside ``datasets``/Ray worker processes torch and faiss are limited to ``num_threads`` (default 1)
    threads, which avoids the fork-after-OpenMP deadlock.
    """
    _limit_threads_in_worker(num_threads)
    records = batch_to_records(batch)
    ids, texts, errors, input_ids = [], [], [], []
    for record, codes, error in tokenizer.iter_tokenized(records, token_type=token_type, on_error=on_error,
                                                         resample=resample, batch_samples=float("inf")):
        ids.append(record.read_id)
        texts.append("" if codes is None else codes_to_text(codes, tokenizer.is_rvq))
        errors.append(error or "")
        if return_ids:
            input_ids.append([] if codes is None else codes_to_ids(codes, tokenizer.codebook_size,
                                                                   tokenizer.is_rvq).tolist())
    out = {"id": ids, "text": texts}
    if on_error == "skip":
        out["error"] = errors
    if return_ids:
        out["input_ids"] = input_ids
    return out
