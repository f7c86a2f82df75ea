"""The structure of a SLOW5/BLOW5 file, read without pyslow5.

pyslow5 kills the process on some malformed headers and silently stops iterating at the first record
it cannot parse. :func:`scan` therefore checks the header field by field and finds the byte span of
every record (BLOW5: by the size before each record; SLOW5: one line each), so that the reader can
hand pyslow5 only well-formed input and account for every record the file declares.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from dataclasses import dataclass, field

from nst_hf.errors import CorruptFileError, UnsupportedFormatError

BLOW5_MAGIC = b"BLOW5\x01"
BLOW5_EOF = b"5WOLB"
#: Bytes of the fixed BLOW5 header before the header-text size.
BLOW5_FIXED_HEADER = 64
#: Newest SLOW5/BLOW5 format version pyslow5 1.x reads safely.
MAX_SUPPORTED_VERSION = (0, 2, 0)
#: More read groups than this is a damaged count, not a real file (pyslow5 allocates per group).
MAX_READ_GROUPS = 65_536
RECORD_COMPRESSIONS = {0: "none", 1: "zlib", 2: "zstd"}
SIGNAL_COMPRESSIONS = {0: "none", 1: "svb-zd", 2: "ex-zd"}
#: The columns every SLOW5 record starts with, and their declared types.
PRIMARY_COLUMNS = (("read_id", "char*"), ("read_group", "uint32_t"), ("digitisation", "double"),
                   ("offset", "double"), ("range", "double"), ("sampling_rate", "double"),
                   ("len_raw_signal", "uint64_t"), ("raw_signal", "int16_t*"))
_SCALAR_TYPES = {"int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint16_t", "uint32_t", "uint64_t",
                 "float", "double", "char"}
_ENUM_TYPE = re.compile(r"^enum\{([^{}\t]*)\}$")
#: Attribute and column names pyslow5 handles (it crashes on repeated names, spaces and a second '@').
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class RecordSpan:
    """One record: its position among the file's records, its bytes ``[start, end)`` and its read id
    (``None`` when the id cannot be decoded without pyslow5)."""

    index: int
    start: int
    end: int
    read_id: str | None


@dataclass
class Slow5Layout:
    """What :func:`scan` found: the header bytes, the well-formed records and the damaged ones."""

    path: str
    binary: bool
    version: tuple[int, int, int]
    num_read_groups: int
    #: Every byte before the first record (BLOW5: fixed header + header text).
    header_end: int
    records: list[RecordSpan] = field(default_factory=list)
    #: Records that are not well formed, each with the reason (never handed to pyslow5).
    bad_records: list[tuple[RecordSpan, str]] = field(default_factory=list)
    #: File-level damage after the last whole record (truncation, a corrupt size); ``None`` when intact.
    damage: str | None = None
    record_compression: int = 0
    #: Blank lines between SLOW5 records (not reads, but pyslow5 stops at them).
    stray_lines: int = 0

    @property
    def intact(self) -> bool:
        """Whether pyslow5 may read the file as it is (no damaged record, nothing truncated, no blank line)."""
        return self.damage is None and not self.bad_records and not self.stray_lines


def _header_error(path: str, problem: str) -> CorruptFileError:
    return CorruptFileError(f"{path}: damaged SLOW5/BLOW5 header: {problem}")


def _check_version(path: str, version: tuple[int, ...]) -> tuple[int, int, int]:
    if len(version) != 3:
        raise _header_error(path, f"version {'.'.join(map(str, version))!r} is not major.minor.patch")
    if version > MAX_SUPPORTED_VERSION:
        raise UnsupportedFormatError(
            f"{path}: SLOW5/BLOW5 version {'.'.join(map(str, version))} is newer than the supported "
            f"{'.'.join(map(str, MAX_SUPPORTED_VERSION))}; convert it with a matching slow5tools "
            "(`slow5tools view`) or upgrade pyslow5 and nst_hf")
    return version  # type: ignore[return-value]


def _valid_type(name: str) -> bool:
    if name.rstrip("*") in _SCALAR_TYPES and name.count("*") <= 1:
        return True
    enum = _ENUM_TYPE.match(name)
    if not enum:
        return False
    labels = enum.group(1).split(",")
    return all(_NAME.match(label) for label in labels) and len(set(labels)) == len(labels)


def parse_text_header(path: str, text: bytes, groups: int | None = None) -> tuple[tuple[int, int, int] | None, int, list[str]]:
    """Check a SLOW5 text header; return (version, read groups, column names).

    A SLOW5 header starts with ``#slow5_version`` and ``#num_read_groups`` lines; the header text
    inside a BLOW5 file has neither (the binary header holds both), so pass its ``groups`` instead.
    ``text`` must end with the column-name line and its newline.
    """
    if b"\r" in text:
        raise _header_error(path, "Windows (CRLF) line endings; SLOW5 lines end with LF only")
    if b"\0" in text:
        raise _header_error(path, "NUL byte in the header text")
    if not text.endswith(b"\n"):
        raise _header_error(path, "the header does not end with a newline")
    lines = text[:-1].decode("utf-8", errors="replace").split("\n")
    version = None
    if groups is None:
        if len(lines) < 4:
            raise _header_error(path, f"{len(lines)} header lines; at least 4 are needed")
        first = lines[0].split("\t")
        if len(first) != 2 or first[0] != "#slow5_version":
            raise _header_error(path, "first line is not '#slow5_version<TAB>x.y.z'")
        try:
            version = _check_version(path, tuple(int(part) for part in first[1].split(".")))
        except ValueError:
            raise _header_error(path, f"unreadable version {first[1]!r}") from None
        second = lines[1].split("\t")
        if len(second) != 2 or second[0] != "#num_read_groups" or not second[1].isdigit():
            raise _header_error(path, "second line is not '#num_read_groups<TAB>N'")
        groups = int(second[1])
        lines = lines[2:]
    if not 1 <= groups <= MAX_READ_GROUPS:
        raise _header_error(path, f"num_read_groups is {groups}; it must be between 1 and {MAX_READ_GROUPS}")
    if len(lines) < 2:
        raise _header_error(path, "the column type and column name lines are missing")
    types_line, names_line = lines[-2], lines[-1]
    attributes: set[str] = set()
    for number, line in enumerate(lines[:-2], start=1):
        fields = line.split("\t")
        if not line.startswith("@") or len(fields) != groups + 1 or not _NAME.match(fields[0][1:]):
            raise _header_error(path, f"header attribute line {number} is not '@name' (letters, digits, _) "
                                      f"followed by {groups} tab-separated value(s) (one per read group)")
        if fields[0] in attributes:
            raise _header_error(path, f"header attribute {fields[0]!r} is repeated")
        attributes.add(fields[0])
    if not types_line.startswith("#") or not names_line.startswith("#read_id\t"):
        raise _header_error(path, "the last two header lines must be '#<types>' and '#read_id<TAB>...'")
    types, names = types_line[1:].split("\t"), names_line[1:].split("\t")
    if len(types) != len(names):
        raise _header_error(path, f"{len(types)} column types for {len(names)} column names")
    if len(set(names)) != len(names) or not all(_NAME.match(name) for name in names):
        raise _header_error(path, "column names are repeated or not made of letters, digits and _")
    for position, (name, kind) in enumerate(PRIMARY_COLUMNS):
        if position >= len(names) or names[position] != name or types[position] != kind:
            raise _header_error(path, f"column {position + 1} must be {name} of type {kind}")
    bad_types = [kind for kind in types if not _valid_type(kind)]
    if bad_types:
        raise _header_error(path, f"unknown column type(s) {bad_types[:3]}")
    return version, groups, names


def scan(path: str | os.PathLike) -> Slow5Layout:
    """Check the header and find every record of a SLOW5 (``.slow5``) or BLOW5 (``.blow5``) file.

    Raises :class:`CorruptFileError` for a damaged header and :class:`UnsupportedFormatError` for a
    version newer than :data:`MAX_SUPPORTED_VERSION`. Damage after the header is recorded in the
    returned layout instead, so that the reads before it can still be read.
    """
    path = os.fsdecode(path)
    with open(path, "rb") as handle:
        if path.endswith(".blow5"):
            return _scan_blow5(path, handle)
        return _scan_slow5(path, handle)


# ---------------------------------------------------------------------- SLOW5 (text)

def _scan_slow5(path: str, handle) -> Slow5Layout:
    header = bytearray()
    while True:
        line = handle.readline()
        if not line:
            raise _header_error(path, "the file ends inside the header (no '#read_id' column line)")
        header += line
        if line.startswith(b"#read_id\t") or len(header) > 64 << 20:
            break
        if not line.startswith((b"#", b"@")):
            raise _header_error(path, "a header line starts with neither '#' nor '@'")
    version, groups, names = parse_text_header(path, bytes(header))
    layout = Slow5Layout(path=path, binary=False, version=version, num_read_groups=groups, header_end=len(header))
    columns = len(names)
    position, index = len(header), 0
    for line in handle:
        span_start, position = position, position + len(line)
        if not line.strip():  # pyslow5 stops at a blank line: only a copy without it is safe
            layout.stray_lines += 1
            continue
        fields = line.rstrip(b"\n").split(b"\t", 8)
        read_id = fields[0].decode("utf-8", errors="replace") or None
        span = RecordSpan(index, span_start, position, read_id)
        index += 1
        problem = _slow5_record_problem(line, fields, columns, groups)
        if problem:
            layout.bad_records.append((span, problem))
        else:
            layout.records.append(span)
    return layout


def _slow5_record_problem(line: bytes, fields: list[bytes], columns: int, groups: int) -> str | None:
    if not line.endswith(b"\n"):
        return "the record is cut short (no newline at the end of the file)"
    if b"\r" in line:
        return "Windows (CRLF) line ending"
    count = line.count(b"\t") + 1
    if count != columns:
        return f"{count} tab-separated fields where the header declares {columns}"
    if not fields[0]:
        return "empty read id"
    if not fields[1].isdigit() or int(fields[1]) >= groups:
        return f"read_group {fields[1][:20]!r} is not one of the file's {groups} read group(s)"
    if not fields[6].isdigit():
        return f"len_raw_signal {fields[6][:20]!r} is not a non-negative integer"
    signal = fields[7]
    declared = int(fields[6])
    values = signal.count(b",") + 1 if signal and signal != b"." else 0
    if values != declared:
        return f"the raw signal holds {values} values where len_raw_signal says {declared}"
    return None


# ---------------------------------------------------------------------- BLOW5 (binary)

def _scan_blow5(path: str, handle) -> Slow5Layout:
    fixed = handle.read(BLOW5_FIXED_HEADER + 4)
    if len(fixed) < BLOW5_FIXED_HEADER + 4 or not fixed.startswith(BLOW5_MAGIC):
        raise CorruptFileError(f"{path}: not a BLOW5 file (bad magic bytes or header shorter than 68 bytes)")
    version = _check_version(path, tuple(fixed[6:9]))
    record_compression = fixed[9]
    (groups,) = struct.unpack_from("<I", fixed, 10)
    signal_compression = fixed[14] if version >= (0, 2, 0) else 0
    padding = fixed[15 if version >= (0, 2, 0) else 14:BLOW5_FIXED_HEADER]
    if record_compression not in RECORD_COMPRESSIONS:
        raise _header_error(path, f"unknown record compression {record_compression} "
                                  f"(known: {RECORD_COMPRESSIONS})")
    if signal_compression not in SIGNAL_COMPRESSIONS:
        raise _header_error(path, f"unknown signal compression {signal_compression} "
                                  f"(known: {SIGNAL_COMPRESSIONS})")
    if any(padding):
        raise _header_error(path, "non-zero bytes in the reserved part of the fixed header")
    if not 1 <= groups <= MAX_READ_GROUPS:
        raise _header_error(path, f"num_read_groups is {groups}; it must be between 1 and {MAX_READ_GROUPS}")
    (text_size,) = struct.unpack_from("<I", fixed, BLOW5_FIXED_HEADER)
    size = os.fstat(handle.fileno()).st_size
    if text_size < 8 or BLOW5_FIXED_HEADER + 4 + text_size > size:
        raise _header_error(path, f"header text size {text_size} does not fit in the file of {size} bytes")
    text = handle.read(text_size)
    parse_text_header(path, text, groups)
    header_end = BLOW5_FIXED_HEADER + 4 + text_size
    layout = Slow5Layout(path=path, binary=True, version=version, num_read_groups=groups, header_end=header_end,
                         record_compression=record_compression)
    handle.seek(max(size - len(BLOW5_EOF), 0))
    has_eof = size - len(BLOW5_EOF) >= header_end and handle.read(len(BLOW5_EOF)) == BLOW5_EOF
    end = size - len(BLOW5_EOF) if has_eof else size
    position, index = header_end, 0
    while position < end:
        handle.seek(position)
        raw_size = handle.read(8)
        record_size = struct.unpack("<Q", raw_size)[0] if len(raw_size) == 8 else None
        if record_size is None or record_size < 3 or position + 8 + record_size > end:
            where = f"after record {index}" if index else "before the first record"
            layout.damage = (f"{end - position} bytes {where} are not a whole record "
                             f"({'truncated file' if not has_eof else 'a damaged record size'})")
            break
        # zstd emits nothing before a whole block (at most 128 KiB) is in; zlib streams
        prefix = handle.read(min(record_size, (256 << 10) if record_compression == 2 else 4096))
        layout.records.append(RecordSpan(index, position, position + 8 + record_size,
                                         _blow5_read_id(prefix, record_compression)))
        position += 8 + record_size
        index += 1
    if layout.damage is None and not has_eof:
        layout.damage = "the end-of-file marker '5WOLB' is missing (truncated file?)"
    return layout


def _blow5_read_id(prefix: bytes, compression: int) -> str | None:
    """The read id at the start of a BLOW5 record (``uint16`` length, then the id), if it decodes."""
    try:
        if compression == 1:
            data = zlib.decompressobj().decompress(prefix, 2 + 65_535)
        elif compression == 2:
            import zstandard

            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(prefix)).read(2 + 65_535)
        else:
            data = prefix
        (length,) = struct.unpack_from("<H", data)
        if length == 0 or len(data) < 2 + length:
            return None
        return data[2:2 + length].decode("ascii")
    except Exception:  # a damaged record: the reader reports it by its position instead
        return None
