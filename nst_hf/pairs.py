"""Paired signal–base rows for LM basecalling: a read's tokens cut into chunks with the bases called in them.

Tokens always come from the whole signal read, encoded once (as ``nst-hf tokenize`` does); chunks only
slice them, so a model trained on chunks sees the tokens it will see on whole reads. A chunk ``[c0, c1)``
(samples of the signal read on the tokenizer's grid) holds frames ``c0 // spt`` to ``ceil(c1 / spt)`` and
the bases whose start sample lies in it; ``base_starts`` gives, per base, the frame (token position; for RVQ
the frame, not the text token) where it starts: ``(start − c0) // spt``. Chunks tile the read from
``s0`` (the first base's start rounded down to a multiple of ``spt``) in steps of ``chunk_size −
chunk_overlap``; the last one ends at the read's end. ``chunk_size = 0`` gives one row per read.

With resampling, every sample position of the basecall is mapped through the resampling ratio
(``round(i · up / down)``, the ratio :func:`nst_hf.preprocessing.resample_signal` uses), and chunk
positions count samples of the resampled read, the grid the tokens live on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from nst_hf.errors import InvalidReadError
from nst_hf.io.basecalls import Basecall, Basecalls
from nst_hf.io.records import SignalRecord
from nst_hf.preprocessing import resampling_ratio
from nst_hf.tokenizers.base import DEFAULT_BATCH_SAMPLES
from nst_hf.tokenizers.vocab import codes_to_text

logger = logging.getLogger(__name__)

#: The columns of every pair row, in order.
PAIR_COLUMNS = ("id", "read_id", "chunk_start", "chunk_size", "text", "bases", "base_starts")


@dataclass(frozen=True)
class PlacedCall:
    """A basecall placed on the tokenizer's sample grid of its signal read.

    ``starts`` (int64, one per base) and ``called_end`` are ``None`` without a move table; ``region`` is the
    ``(start, stop)`` of the signal that belongs to the basecall (the whole read unless it was split).
    """

    read_id: str
    bases: str
    starts: np.ndarray | None
    called_end: int | None
    region: tuple[int, int]


def _mapper(ratio: Fraction | None):
    if ratio is None or ratio == 1:
        return lambda value: value
    up, down = ratio.numerator, ratio.denominator
    return lambda value: (value * up + down // 2) // down


def place_call(call: Basecall, signal_samples: int, grid_samples: int, ratio: Fraction | None = None) -> PlacedCall:
    """Check ``call`` against a signal of ``signal_samples`` raw samples and map it onto the tokenizer's grid
    (``grid_samples`` long: the resampled length, or ``signal_samples``), raising :class:`InvalidReadError`."""
    call.check_signal(signal_samples)
    return place(call.read_id, call.sequence, call.base_starts if call.has_moves else None,
                 call.called_end if call.has_moves else None, call.region(signal_samples), signal_samples,
                 grid_samples, ratio)


def place(read_id: str, bases: str, starts, called_end: int | None, region: tuple[int, int], signal_samples: int,
          grid_samples: int, ratio: Fraction | None = None) -> PlacedCall:
    """A :class:`PlacedCall` from raw sample positions (``starts`` ``None`` without a move table)."""
    to_grid = _mapper(ratio)
    start, stop = region
    grid_region = (int(to_grid(start)), grid_samples if stop >= signal_samples else min(int(to_grid(stop)), grid_samples))
    if starts is None:
        return PlacedCall(read_id, bases, None, None, grid_region)
    return PlacedCall(read_id, bases, np.asarray(to_grid(np.asarray(starts, dtype=np.int64)), dtype=np.int64),
                      int(to_grid(called_end)), grid_region)


def check_chunking(chunk_size: int, chunk_overlap: int, samples_per_token: int) -> None:
    """Raise ``ValueError`` unless the chunk size and overlap fit the tokenizer's frames."""
    if chunk_size < 0 or chunk_overlap < 0:
        raise ValueError(f"chunk size and overlap must be >= 0, got {chunk_size} and {chunk_overlap}")
    if chunk_size == 0:
        if chunk_overlap:
            raise ValueError("--chunk-overlap needs a --chunk-size (0 means one row per read, with no overlap)")
        return
    for name, value in (("chunk size", chunk_size), ("chunk overlap", chunk_overlap)):
        if value % samples_per_token:
            below = value // samples_per_token * samples_per_token
            raise ValueError(f"{name} {value} is not a multiple of the tokenizer's {samples_per_token} samples per "
                             f"token, so chunks would cut frames; use {below or samples_per_token} or "
                             f"{below + samples_per_token}")
    if chunk_overlap >= chunk_size:
        raise ValueError(f"chunk overlap {chunk_overlap} must be smaller than the chunk size {chunk_size}")


def chunk_bounds(first: int, end: int, chunk_size: int, chunk_overlap: int) -> list[tuple[int, int]]:
    """``[(c0, c1), ...]`` tiling ``[first, end)`` in steps of ``chunk_size − chunk_overlap`` (one chunk for 0)."""
    if chunk_size == 0 or end <= first:
        return [(first, max(first, end))]
    bounds, start = [], first
    while True:
        stop = min(start + chunk_size, end)
        bounds.append((start, stop))
        if stop >= end:
            return bounds
        start += chunk_size - chunk_overlap


def chunk_rows(codes: np.ndarray, placed: PlacedCall, samples_per_token: int, chunk_size: int = 0,
               chunk_overlap: int = 0, rvq: bool = False) -> list[dict]:
    """The rows (see :data:`PAIR_COLUMNS`) of one placed basecall, from its signal read's whole-read ``codes``."""
    spt = samples_per_token
    frames = codes.shape[0]
    region_start, end = placed.region
    if placed.starts is None:
        if chunk_size:
            raise InvalidReadError(f"read {placed.read_id}: no move table, so it cannot be cut into chunks; "
                                   "use chunk size 0 (whole-read pairs) for FASTQ or basecalls without moves",
                                   read_id=placed.read_id)
        first = region_start // spt * spt
        return [_row(placed.read_id, first, end, codes[first // spt:min(-(-end // spt), frames)], placed.bases,
                     None, rvq)]
    first = (int(placed.starts[0]) if placed.starts.size else region_start) // spt * spt
    rows = []
    for c0, c1 in chunk_bounds(first, end, chunk_size, chunk_overlap):
        a, b = np.searchsorted(placed.starts, [c0, c1], side="left").tolist()  # starts ascend: bases a..b-1
        starts = ((placed.starts[a:b] - c0) // spt).tolist()
        rows.append(_row(placed.read_id, c0, c1, codes[c0 // spt:min(-(-c1 // spt), frames)], placed.bases[a:b],
                         starts, rvq))
    return rows


def _row(read_id: str, c0: int, c1: int, codes: np.ndarray, bases: str, base_starts, rvq: bool) -> dict:
    return {"id": f"{read_id}:{c0}", "read_id": read_id, "chunk_start": int(c0), "chunk_size": int(c1 - c0),
            "text": codes_to_text(codes, rvq), "bases": bases, "base_starts": base_starts}


def grid_of(tokenizer, record: SignalRecord, resample: bool) -> tuple[int, Fraction | None]:
    """(samples of ``record`` on the tokenizer's grid, the resampling ratio or ``None``)."""
    source, target = record.sampling_rate, tokenizer.sampling_rate
    if not resample or source is None or target is None or abs(float(source) - float(target)) < 1e-6:
        return record.num_samples, None
    ratio = resampling_ratio(float(source), float(target))
    return -(-record.num_samples * ratio.numerator // ratio.denominator), ratio


@dataclass(frozen=True)
class Pairing:
    """What a pairs run needs besides the tokenizer: the basecalls and the chunking."""

    basecalls: Basecalls
    chunk_size: int = 0
    chunk_overlap: int = 0

    def settings(self) -> dict:
        """What ``--resume`` must find unchanged: the chunking and every basecall file (path, size, mtime)."""
        from nst_hf.pipeline.parts import input_stamp  # the stamp the run keeps of each signal file

        return {"chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap,
                "basecalls": [input_stamp(f) for f in self.basecalls.files]}


@dataclass
class PairOutcome:
    """One basecall (or one signal read without any) of :func:`iter_pairs`: its rows, or why it has none;
    ``samples``: the raw samples of the signal that belong to it."""

    file: str
    read_id: str
    rows: list[dict]
    error: str | None = None
    samples: int = 0


def _no_basecall(record: SignalRecord, basecalls: Basecalls) -> str:
    files = ", ".join(basecalls.files[:3]) + (" …" if len(basecalls.files) > 3 else "")
    return f"the read has a signal but no basecall in {files}"


def iter_pairs(tokenizer, records: Iterable[SignalRecord], basecalls: Basecalls, chunk_size: int = 0,
               chunk_overlap: int = 0, token_type: str | None = None, on_error: str = "raise",
               resample: bool = False, batch_samples: int = DEFAULT_BATCH_SAMPLES,
               seen: set | None = None) -> Iterator[PairOutcome]:
    """Pair the reads of ``records`` with their basecalls: one :class:`PairOutcome` per basecall.

    A signal read without a basecall, a basecall that does not fit its signal, or a read that cannot be
    tokenized raises :class:`InvalidReadError` (``on_error="raise"``) or gives an outcome with ``error``
    (``"skip"``). The signal read ids met are added to ``seen``, so the caller can report basecalls whose
    signal never came.
    """
    check_chunking(chunk_size, chunk_overlap, tokenizer.samples_per_token)
    missing: list[PairOutcome] = []

    def with_basecalls() -> Iterator[SignalRecord]:
        for record in records:
            if seen is not None:
                seen.add(record.read_id)
            if basecalls.for_signal(record.read_id):
                yield record
                continue
            message = _no_basecall(record, basecalls)
            if on_error == "raise":
                raise InvalidReadError(f"{record.source_file}: read {record.read_id}: {message} (pass "
                                       "--on-error skip to pair the others and report it)",
                                       path=record.source_file, read_id=record.read_id)
            missing.append(PairOutcome(record.source_file, record.read_id, [], message))

    for record, codes, error in tokenizer.iter_tokenized(with_basecalls(), token_type, on_error, resample,
                                                         batch_samples):
        yield from missing
        missing.clear()
        if codes is None or codes.size == 0:
            reason = error or tokenizer.no_tokens_reason(record.num_samples)
            for call_id in basecalls.for_signal(record.read_id):
                yield PairOutcome(record.source_file, call_id, [], reason)
            continue
        grid, ratio = grid_of(tokenizer, record, resample)
        for call_id in basecalls.for_signal(record.read_id):
            try:
                call = basecalls[call_id]
                placed = place_call(call, record.num_samples, grid, ratio)
                rows = chunk_rows(codes, placed, tokenizer.samples_per_token, chunk_size, chunk_overlap,
                                  tokenizer.is_rvq)
            except InvalidReadError as exc:
                if on_error == "raise":
                    raise
                logger.warning("skipping basecall %s: %s", call_id, exc)
                yield PairOutcome(exc.path or record.source_file, call_id, [], str(exc))
                continue
            start, stop = call.region(record.num_samples)
            yield PairOutcome(record.source_file, call_id, rows, None, stop - start)
    yield from missing


def calls_without_signal(basecalls: Basecalls, seen: set) -> list[PairOutcome]:
    """An outcome (with its reason) for every basecall whose signal read was not among ``seen``."""
    out = []
    for signal_id in sorted(basecalls.signal_read_ids() - seen):
        for call_id in basecalls.for_signal(signal_id):
            source = basecalls.file_of(call_id)
            out.append(PairOutcome(source, call_id, [],
                                   f"basecall without a signal: no read {signal_id} in the signal inputs"))
    return out
