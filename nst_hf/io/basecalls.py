"""Basecaller output (SAM/BAM/CRAM with move tables, or FASTQ) by read id: :func:`open_basecalls`.

Parsing is pysam's. A record's move table ``mv:B:c`` holds the block stride followed by one 0/1 per block
(1 where a new base starts); ``ts:i`` is the number of samples trimmed before the first block and ``ns:i``
the read's samples, so base *i* starts at sample ``ts + stride × (index of the i-th 1)``. A split read
(``pi:Z`` parent id, ``sp:i`` offset) lies at that offset in its parent's signal; every position here is
a sample of the *signal read* (the parent for split reads). Mapped files store reverse-strand records
(flag 16) reverse-complemented: the sequence is turned back into the basecaller's orientation. Secondary
and supplementary records, and dorado's duplex calls (``dx:i:1``, bases from two signal reads), are
skipped and counted in ``skipped_records``.

The first pass keeps only an index (read id → file offset) for SAM and BAM, so memory does not grow
with the bases; FASTQ (sequence only, no move table) and CRAM (which htslib cannot seek in) are held in
memory. A record that cannot be
used raises :class:`~nst_hf.errors.InvalidReadError` when it is looked up, so a run can skip it and
report why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nst_hf.errors import CorruptFileError, InvalidReadError, MissingDependencyError, UnsupportedFormatError

logger = logging.getLogger(__name__)

__all__ = ["Basecall", "Basecalls", "open_basecalls", "BASECALL_SUFFIXES", "find_basecall_files"]

#: Name endings of the files :func:`open_basecalls` reads.
ALIGNMENT_SUFFIXES = (".sam", ".bam", ".cram")
FASTQ_SUFFIXES = (".fastq", ".fq", ".fastq.gz", ".fq.gz")
BASECALL_SUFFIXES = ALIGNMENT_SUFFIXES + FASTQ_SUFFIXES

_SECONDARY, _SUPPLEMENTARY, _REVERSE = 0x100, 0x800, 0x10
_HARD_CLIP = 5  # pysam's BAM_CHARD_CLIP
_COMPLEMENT = str.maketrans("ACGTUNacgtun", "TGCAANtgcaan")


def reverse_complement(sequence: str) -> str:
    """The reverse complement of a DNA/RNA sequence (``U`` pairs with ``A``; other letters become ``N``-safe)."""
    return sequence.translate(_COMPLEMENT)[::-1]


@dataclass(frozen=True, eq=False)
class Basecall:
    """One basecalled read in the basecaller's orientation, and where its bases lie in the signal.

    Attributes
    ----------
    read_id : str
        The basecall's read id (a split read's own id).
    sequence : str
        Bases as the basecaller emitted them (reverse-strand records are turned back).
    source_file : str
        The file it came from.
    stride : int | None
        Samples per move-table block; ``None`` without a move table (FASTQ, or SAM without ``mv``).
    moves : numpy.ndarray | None
        One uint8 0/1 per block.
    trimmed_samples : int
        ``ts``: samples before the first block.
    num_samples : int | None
        ``ns``: the read's samples (a split read's own part), if recorded.
    parent_read_id : str | None
        ``pi``: the signal read a split read was cut from.
    split_offset : int
        ``sp``: where a split read starts in its parent's signal (0 otherwise).
    """

    read_id: str
    sequence: str
    source_file: str = ""
    stride: int | None = None
    moves: np.ndarray | None = None
    trimmed_samples: int = 0
    num_samples: int | None = None
    parent_read_id: str | None = None
    split_offset: int = 0

    @property
    def signal_read_id(self) -> str:
        """The read id of the signal this basecall came from (the parent of a split read)."""
        return self.parent_read_id or self.read_id

    @property
    def has_moves(self) -> bool:
        """Whether base positions are known (a move table was recorded)."""
        return self.moves is not None

    @property
    def base_starts(self) -> np.ndarray:
        """Sample (of the signal read) where each base starts, int64 ``[len(sequence)]``."""
        self._require_moves()
        first = self.split_offset + self.trimmed_samples
        return first + self.stride * np.flatnonzero(self.moves).astype(np.int64)

    @property
    def called_end(self) -> int:
        """Sample (of the signal read) where the move table ends: the last base's span ends here."""
        self._require_moves()
        return self.split_offset + self.trimmed_samples + self.stride * int(self.moves.size)

    def region(self, signal_samples: int) -> tuple[int, int]:
        """``(start, stop)`` samples of the signal read that belong to this basecall."""
        if self.parent_read_id is None:
            return 0, signal_samples
        stop = self.split_offset + (self.num_samples if self.num_samples is not None else signal_samples)
        return self.split_offset, min(stop, signal_samples)

    def check_signal(self, signal_samples: int) -> None:
        """Raise :class:`InvalidReadError` when this basecall cannot belong to a signal of ``signal_samples``."""
        def bad(problem: str) -> InvalidReadError:
            return InvalidReadError(f"{self.source_file}: read {self.read_id}: {problem}",
                                    path=self.source_file, read_id=self.read_id)

        if self.parent_read_id is None:
            if self.num_samples is not None and self.num_samples != signal_samples:
                raise bad(f"the basecall says the read has {self.num_samples} samples (ns), but its signal has "
                          f"{signal_samples}: were these basecalls made from these signal files?")
        elif self.split_offset + (self.num_samples or 0) > signal_samples:
            raise bad(f"a split read at samples {self.split_offset}..{self.split_offset + (self.num_samples or 0)} "
                      f"(sp + ns) of parent {self.parent_read_id}, which has only {signal_samples} samples")
        if self.has_moves and self.called_end > signal_samples:
            raise bad(f"the move table ends at sample {self.called_end} (sp + ts + stride × blocks), past the "
                      f"signal's {signal_samples} samples")

    def _require_moves(self) -> None:
        if self.moves is None:
            raise InvalidReadError(
                f"{self.source_file}: read {self.read_id}: no move table (mv tag), so base positions are unknown; "
                "only whole-read pairs are possible (chunk size 0). Basecall with --emit-moves (dorado) or "
                "--moves_out (guppy) for positions.", path=self.source_file, read_id=self.read_id)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(BASECALL_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def find_basecall_files(paths) -> list[Path]:
    """Expand files and directories (recursive, sorted) into SAM/BAM/CRAM/FASTQ files."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for item in paths:
        path = Path(os.fsdecode(item))
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p))
        elif path.is_file():
            if not _suffix(path):
                raise UnsupportedFormatError(f"{path}: not a basecall file; supported: {', '.join(BASECALL_SUFFIXES)}")
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return found


def _pysam():
    try:
        import pysam
    except ImportError as exc:  # pragma: no cover - pysam is an install requirement
        raise MissingDependencyError("reading basecalls needs pysam: pip install pysam") from exc
    return pysam


def _tag(record, name: str, default=None):
    return record.get_tag(name) if record.has_tag(name) else default


def _alignment_to_basecall(record, source: str) -> Basecall:
    """A pysam ``AlignedSegment`` → :class:`Basecall`, or :class:`InvalidReadError` saying what is wrong."""
    read_id = record.query_name

    def bad(problem: str) -> InvalidReadError:
        return InvalidReadError(f"{source}: read {read_id}: {problem}", path=source, read_id=read_id)

    if record.cigartuples and any(op == _HARD_CLIP for op, _ in record.cigartuples):
        raise bad("the record is hard-clipped (CIGAR H), so it does not hold the read's full sequence; use the "
                  "primary record or an unaligned/soft-clipped BAM")
    sequence = record.query_sequence
    if not sequence:
        raise bad("the record has no sequence (SEQ is '*')")
    if record.flag & _REVERSE:
        sequence = reverse_complement(sequence)
    stride = moves = None
    if record.has_tag("mv"):
        table = np.asarray(record.get_tag("mv"), dtype=np.int64)
        if table.size == 0 or table[0] < 1:
            raise bad("the move table (mv) has no positive block stride as its first value")
        stride, blocks = int(table[0]), table[1:]
        if blocks.size and (blocks.min() < 0 or blocks.max() > 1):
            raise bad("the move table (mv) holds values other than 0 and 1 after the stride")
        moves = blocks.astype(np.uint8)
        if int(moves.sum()) != len(sequence):
            raise bad(f"the move table marks {int(moves.sum())} base starts but the sequence has {len(sequence)} "
                      "bases")
    trimmed = int(_tag(record, "ts", 0))
    num_samples = _tag(record, "ns")
    num_samples = None if num_samples is None else int(num_samples)
    split_offset = int(_tag(record, "sp", 0))
    if trimmed < 0 or split_offset < 0 or (num_samples is not None and num_samples < 0):
        raise bad(f"negative sample counts (ts={trimmed}, sp={split_offset}, ns={num_samples})")
    if moves is not None and num_samples is not None and trimmed + stride * moves.size > num_samples:
        raise bad(f"ts + stride × blocks = {trimmed + stride * moves.size} samples, more than the read's "
                  f"{num_samples} (ns)")
    return Basecall(read_id=read_id, sequence=sequence, source_file=source, stride=stride, moves=moves,
                    trimmed_samples=trimmed, num_samples=num_samples, parent_read_id=_tag(record, "pi"),
                    split_offset=split_offset)


class Basecalls(Mapping):
    """Basecalls of one or more files, by read id (a read-only mapping of :class:`Basecall`).

    ``for_signal(read_id)`` lists the basecalls of one signal read (itself, or its split reads in signal
    order). Looking up a record that cannot be used raises :class:`InvalidReadError`; ``problems`` lists
    the file-level findings of the index pass (duplicate ids). Picklable (the index travels, open files
    do not) and safe after ``fork``: every process opens its own handles.
    """

    def __init__(self, paths, reference: str | None = None):
        self.files = [str(p) for p in find_basecall_files(paths)]
        if not self.files:
            raise ValueError(f"no SAM/BAM/CRAM/FASTQ files found in {paths!r}")
        self.reference = reference
        self._index: dict[str, tuple[int, int]] = {}   # read id -> (file number, offset)
        self._memory: dict[str, Basecall | InvalidReadError] = {}  # FASTQ and CRAM (no seeking): parsed
        self._children: dict[str, list[tuple[int, str]]] = {}  # signal read id -> [(split offset, read id)]
        self._duplicates: dict[str, str] = {}
        self.skipped_records = {"secondary": 0, "supplementary": 0, "duplex": 0}
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()
        for number, file in enumerate(self.files):
            self._index_file(number, file)
        for children in self._children.values():
            children.sort()
        if any(self.skipped_records.values()):
            logger.info("basecalls: skipped %s records (not primary simplex calls of one signal read)",
                        ", ".join(f"{n} {kind}" for kind, n in self.skipped_records.items() if n))

    # ---------------------------------------------------------------- index pass
    def _open_alignment(self, file: str):
        pysam = _pysam()
        try:
            return pysam.AlignmentFile(file, "r", check_sq=False, reference_filename=self.reference)
        except (OSError, ValueError) as exc:
            raise CorruptFileError(f"{file}: not a readable SAM/BAM/CRAM file ({exc})") from exc

    def _add(self, read_id: str, parent: str | None, split_offset: int, file: str) -> bool:
        if read_id in self._index or read_id in self._memory:
            first = self.file_of(read_id)
            self._duplicates[read_id] = f"read {read_id} has more than one primary basecall ({first} and {file})"
            return False
        self._children.setdefault(parent or read_id, []).append((split_offset if parent else -1, read_id))
        return True

    def _index_file(self, number: int, file: str) -> None:
        if _suffix(Path(file)) in FASTQ_SUFFIXES:
            pysam = _pysam()
            try:
                with pysam.FastxFile(file) as handle:
                    for entry in handle:
                        if not entry.sequence:
                            continue
                        call = Basecall(read_id=entry.name, sequence=entry.sequence, source_file=file)
                        if self._add(entry.name, None, 0, file):
                            self._memory[entry.name] = call
            except (OSError, ValueError) as exc:
                raise CorruptFileError(f"{file}: not a readable FASTQ file ({exc})") from exc
            return
        handle = self._open_alignment(file)
        seekable = _suffix(Path(file)) != ".cram"  # htslib cannot seek in CRAM without an index: keep its calls
        try:
            while True:
                offset = handle.tell()
                try:
                    record = next(handle)
                except StopIteration:
                    break
                if record.flag & _SECONDARY:
                    self.skipped_records["secondary"] += 1
                    continue
                if record.flag & _SUPPLEMENTARY:
                    self.skipped_records["supplementary"] += 1
                    continue
                if _tag(record, "dx") == 1:  # a duplex call: its bases come from two signal reads, not one
                    self.skipped_records["duplex"] += 1
                    continue
                parent = _tag(record, "pi")
                if not self._add(record.query_name, parent, int(_tag(record, "sp", 0)), file):
                    continue
                if seekable:
                    self._index[record.query_name] = (number, offset)
                    continue
                try:
                    self._memory[record.query_name] = _alignment_to_basecall(record, file)
                except InvalidReadError as exc:
                    self._memory[record.query_name] = exc
        except (OSError, ValueError) as exc:
            raise CorruptFileError(f"{file}: unreadable after {len(self._index)} records ({exc})") from exc
        finally:
            handle.close()

    # ---------------------------------------------------------------- lookups
    def __getitem__(self, read_id: str) -> Basecall:
        if read_id in self._duplicates:
            raise InvalidReadError(self._duplicates[read_id], read_id=read_id)
        if read_id in self._memory:
            call = self._memory[read_id]
            if isinstance(call, InvalidReadError):
                raise call
            return call
        number, offset = self._index[read_id]  # KeyError for an unknown id, as a mapping should
        handle = self._handle(number)
        handle.seek(offset)
        return _alignment_to_basecall(next(handle), self.files[number])

    def __iter__(self) -> Iterator[str]:
        yield from self._index
        yield from self._memory

    def __len__(self) -> int:
        return len(self._index) + len(self._memory)

    def __contains__(self, read_id) -> bool:
        return read_id in self._index or read_id in self._memory

    def file_of(self, read_id: str) -> str:
        """The file holding ``read_id``'s basecall."""
        if read_id in self._memory:
            call = self._memory[read_id]
            return call.path if isinstance(call, InvalidReadError) else call.source_file
        return self.files[self._index[read_id][0]]

    def for_signal(self, signal_read_id: str) -> list[str]:
        """Read ids of the basecalls made from signal read ``signal_read_id`` (split reads by offset)."""
        return [read_id for _, read_id in self._children.get(signal_read_id, [])]

    def signal_read_ids(self) -> set[str]:
        """Every signal read id some basecall refers to."""
        return set(self._children)

    def _handle(self, number: int):
        if os.getpid() != self._pid:  # after fork: never share a file offset with the parent
            self._handles, self._pid = {}, os.getpid()
        if number not in self._handles:
            self._handles[number] = self._open_alignment(self.files[number])
        return self._handles[number]

    def close(self) -> None:
        """Close the open files (lookups reopen them)."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __enter__(self) -> Basecalls:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"Basecalls({len(self)} reads from {len(self.files)} file(s))"


def open_basecalls(paths, reference: str | None = None) -> Basecalls:
    """Open basecalls (SAM/BAM/CRAM with move tables, or FASTQ; files or directories) as a mapping by read id.

    Parameters
    ----------
    paths : str | PathLike | list
        Files or directories (searched recursively for ``.sam``, ``.bam``, ``.cram``, ``.fastq``/``.fq``
        (optionally ``.gz``)).
    reference : str, optional
        FASTA reference, for CRAM files that need one to decode their sequences.

    Returns
    -------
    Basecalls
        ``calls[read_id]`` is a :class:`Basecall`; ``calls.for_signal(read_id)`` the basecalls of a signal
        read (its split reads, in order).
    """
    return Basecalls(paths, reference=reference)

