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


def basecall_features():
    """The columns :func:`reads_to_dataset` adds with ``basecalls=``: one row per basecall, joined to its signal.

    ``signal_read_id`` names the signal read (a split read's parent; the row's ``signal`` is that whole read),
    ``bases`` the basecaller's sequence, ``base_samples`` the signal sample where each base starts (empty
    without a move table), ``called_end`` the sample where the move table ends (-1 without one) and
    ``region_start``/``region_end`` the part of the signal that belongs to the basecall.
    """
    from datasets import List, Value

    return {"signal_read_id": Value("string"), "bases": Value("large_string"), "base_samples": List(Value("int64")),
            "called_end": Value("int64"), "region_start": Value("int64"), "region_end": Value("int64")}


def _generate_reads(files: list[str], read_ids: tuple[str, ...] | None, on_error: str, basecalls=None):
    with open_reads(files, read_ids=read_ids, on_error=on_error) as source:
        for record in source:
            row = {"read_id": record.read_id, "signal": record.signal, "offset": record.offset,
                   "range": record.range, "digitisation": record.digitisation,
                   "sampling_rate": record.sampling_rate, "source_file": record.source_file}
            if basecalls is None:
                yield row
                continue
            yield from _joined_rows(row, record, basecalls, on_error)


def _joined_rows(row: dict, record: SignalRecord, basecalls, on_error: str):
    """One row per basecall of ``record`` (see :func:`basecall_features`); a read or basecall that cannot be
    joined raises, or with ``on_error="skip"`` is logged and left out."""
    from nst_hf.errors import InvalidReadError

    call_ids = basecalls.for_signal(record.read_id)
    if not call_ids:
        message = f"{record.source_file}: read {record.read_id}: the read has a signal but no basecall"
        if on_error == "raise":
            raise InvalidReadError(message + " (pass on_error='skip' to leave it out)", path=record.source_file,
                                   read_id=record.read_id)
        logger.warning("skipping %s", message)
        return
    for call_id in call_ids:
        try:
            call = basecalls[call_id]
            call.check_signal(record.num_samples)
        except InvalidReadError as exc:
            if on_error == "raise":
                raise
            logger.warning("skipping basecall %s: %s", call_id, exc)
            continue
        start, stop = call.region(record.num_samples)
        yield {**row, "read_id": call.read_id, "signal_read_id": record.read_id, "bases": call.sequence,
               "base_samples": call.base_starts if call.has_moves else np.zeros(0, np.int64),
               "called_end": call.called_end if call.has_moves else -1, "region_start": start, "region_end": stop}


def _fingerprint(files: list[str], read_ids, on_error: str) -> str:
    digest = hashlib.sha256()
    for file in files:
        stat = os.stat(file)
        digest.update(f"{os.path.abspath(file)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(repr((sorted(read_ids) if read_ids else None, on_error)).encode())
    return digest.hexdigest()[:32]


def reads_to_dataset(paths, read_ids: Iterable[str] | None = None, on_error: str = "raise",
                     num_proc: int | None = None, writer_batch_size: int = 64, cache_dir: str | None = None,
                     basecalls=None):
    """Build a ``datasets.Dataset`` of reads from FAST5/POD5/SLOW5/BLOW5 files or directories.

    Reads stream from a generator into Arrow (memory stays bounded by ``writer_batch_size`` reads).
    The fingerprint comes from the files' paths, sizes and modification times, so a changed file is
    never served from a stale cache. With ``on_error="skip"`` bad reads are logged and left out.

    ``basecalls`` (SAM/BAM/CRAM/FASTQ paths, or :func:`nst_hf.io.basecalls.open_basecalls`' mapping) joins
    each read to its basecalls: one row per basecall with the columns of :func:`basecall_features`, ready for
    :func:`pair_batch`. A read without a basecall, or a basecall whose signal is not among ``paths``, is an
    error (``on_error="skip"``: a logged warning, and the row is left out).
    """
    from datasets import Dataset, Features

    from datasets.exceptions import DatasetGenerationError

    files = [str(p) for p in find_signal_files(paths)]
    read_ids = sorted(read_ids) if read_ids is not None else None
    features, fingerprint = read_features(), _fingerprint(files, read_ids, on_error)
    calls = None
    if basecalls is not None:
        from nst_hf.io.basecalls import Basecalls, open_basecalls

        calls = basecalls if isinstance(basecalls, Basecalls) else open_basecalls(basecalls)
        features = Features({**features, **basecall_features()})
        fingerprint = hashlib.sha256((fingerprint + _fingerprint(calls.files, None, "")).encode()).hexdigest()[:32]
    try:
        dataset = Dataset.from_generator(
            # only ``files`` is a list: datasets shards every list in gen_kwargs over num_proc (a tuple it leaves whole)
            _generate_reads, features=features, gen_kwargs={"files": files,
                                                            "read_ids": tuple(read_ids) if read_ids else read_ids,
                                                            "on_error": on_error, "basecalls": calls},
            num_proc=num_proc, writer_batch_size=writer_batch_size, cache_dir=cache_dir, fingerprint=fingerprint,
        )
    except DatasetGenerationError as exc:  # datasets wraps the reader's error: surface nst_hf's own
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, NstHfError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause.with_traceback(None) from None
    if calls is not None and read_ids is None:
        _check_every_basecall_joined(dataset, calls, on_error)
    return dataset


def _check_every_basecall_joined(dataset, calls, on_error: str) -> None:
    from nst_hf.errors import InvalidReadError

    joined = set(dataset["signal_read_id"])
    missing = sorted(calls.signal_read_ids() - joined)
    if not missing:
        return
    message = (f"{len(missing)} signal read(s) named by the basecalls have no row: not in the signal files, or "
               f"skipped above ({', '.join(missing[:3])}{' …' if len(missing) > 3 else ''})")
    if on_error == "raise":
        raise InvalidReadError(message + "; add their files, or pass on_error='skip' to leave them out")
    logger.warning("%s; their basecalls are left out", message)


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


def _placed_from_columns(batch):
    """The basecall columns of :func:`reads_to_dataset` (``basecalls=``) as :class:`nst_hf.pairs.PlacedCall`
    inputs, per row: ``(bases, base_samples or None, called_end or None, (region_start, region_end))``."""
    out = []
    for bases, samples, end, start, stop in zip(batch["bases"], batch["base_samples"], batch["called_end"],
                                                batch["region_start"], batch["region_end"]):
        has_moves = end is not None and int(end) >= 0
        out.append((bases, np.asarray(samples, dtype=np.int64) if has_moves else None,
                    int(end) if has_moves else None, (int(start), int(stop))))
    return out


def pair_batch(batch, tokenizer, basecalls=None, chunk_size: int = 0, chunk_overlap: int = 0,
               token_type: str | None = None, resample: bool = False, on_error: str = "raise",
               num_threads: int | None = None) -> dict:
    """``datasets.map(batched=True)`` function: read rows → paired rows (:data:`nst_hf.pairs.PAIR_COLUMNS`).

    The batch is either :func:`reads_to_dataset`'s rows with ``basecalls=`` (the basecall columns are used),
    or plain read rows with ``basecalls`` given here (an opened :func:`~nst_hf.io.basecalls.open_basecalls`
    mapping, joined by read id). Rows change in number, so pass ``remove_columns=ds.column_names``::

        pairs = ds.map(pair_batch, batched=True, remove_columns=ds.column_names,
                       fn_kwargs={"tokenizer": tok, "chunk_size": 4000})

    Each read is tokenized whole, so every chunk's text is the slice of the whole read's tokens. With
    ``on_error="skip"`` a read or basecall that cannot be paired gives one row with empty text and the
    reason in an ``error`` column (empty for good rows).
    """
    from nst_hf.errors import InvalidReadError
    from nst_hf.pairs import PAIR_COLUMNS, check_chunking, chunk_rows, grid_of, iter_pairs, place

    _limit_threads_in_worker(num_threads)
    check_chunking(chunk_size, chunk_overlap, tokenizer.samples_per_token)
    records = batch_to_records(batch)
    out: dict[str, list] = {name: [] for name in PAIR_COLUMNS}
    errors: list[str] = []

    def add(rows: list[dict], error: str = "") -> None:
        for row in rows:
            for name in PAIR_COLUMNS:
                out[name].append(row[name])
            errors.append(error)

    def failed(read_id: str, error: str) -> None:
        add([{"id": f"{read_id}:0", "read_id": read_id, "chunk_start": 0, "chunk_size": 0, "text": "", "bases": "",
              "base_starts": []}], error)

    if "bases" in batch:  # joined by reads_to_dataset(basecalls=...)
        columns = _placed_from_columns(batch)
        row_of = {id(record): i for i, record in enumerate(records)}
        for record, codes, error in tokenizer.iter_tokenized(records, token_type, on_error, resample,
                                                             batch_samples=float("inf")):
            if codes is None or codes.size == 0:
                failed(record.read_id, error or tokenizer.no_tokens_reason(record.num_samples))
                continue
            grid, ratio = grid_of(tokenizer, record, resample)
            bases, starts, end, region = columns[row_of[id(record)]]
            placed = place(record.read_id, bases, starts, end, region, record.num_samples, grid, ratio)
            try:
                add(chunk_rows(codes, placed, tokenizer.samples_per_token, chunk_size, chunk_overlap, tokenizer.is_rvq))
            except InvalidReadError as exc:
                if on_error == "raise":
                    raise
                failed(record.read_id, str(exc))
    else:
        if basecalls is None:
            raise ValueError("pair_batch needs basecall columns (reads_to_dataset(..., basecalls=...)) or "
                             "basecalls=open_basecalls(...)")
        for outcome in iter_pairs(tokenizer, records, basecalls, chunk_size, chunk_overlap, token_type, on_error,
                                  resample, batch_samples=float("inf")):
            if outcome.error is not None:
                failed(outcome.read_id, outcome.error)
            else:
                add(outcome.rows)
    if on_error == "skip":
        out["error"] = errors
    return out
