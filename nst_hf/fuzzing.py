"""Fuzz the readers with damaged copies of real files: no crash, no hang, no read lost without a report.

Each mutant of a clean file (bit flips, truncations, zeroed and duplicated blocks, and for SLOW5/BLOW5
targeted header damage) is read with ``open_reads(on_error="skip")`` in a child process, so that a
crash or a hang is seen and counted instead of ending the campaign. Every read of the clean file must
then be delivered with its clean data (raw samples, calibration and sampling rate: everything its
tokens depend on, so equal data means equal tokens), or named in the report (by read id, or by a
file-level report), or be one the mutation touched: for SLOW5/BLOW5 its record's bytes overlap the
mutated ones; for FAST5/POD5 it is delivered with changed data, or the mutant delivers or reports a
read under an id the clean file does not have (a damaged read id or group name).

Run a campaign on your own files with ``python -m nst_hf.fuzzing FILE... [--mutants N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Seconds a child may spend on one batch of mutants before it counts as hung.
BATCH_TIMEOUT_S = 120


@dataclass
class Mutant:
    """A damaged copy: its bytes, the byte range ``[start, end)`` of the clean file it touched, and how."""

    data: bytes
    touched: tuple[int, int]
    kind: str


@dataclass
class CampaignResult:
    """Counts of a campaign, and the mutants behind every failure."""

    mutants: int = 0
    crashed: list[str] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    reads_lost: int = 0
    reads_changed_by_mutation: int = 0
    reads_reported: int = 0
    #: Mutants that passed nst_hf's own checks but crashed pyslow5's helper process (skipped and reported).
    crashes_contained: int = 0

    def to_dict(self) -> dict:
        return {"mutants": self.mutants, "crashed": len(self.crashed), "hung": len(self.hung),
                "aborted_under_skip": len(self.aborted), "reads_lost_without_report": self.reads_lost,
                "reads_changed_and_attributed": self.reads_changed_by_mutation,
                "reads_reported": self.reads_reported, "crashes_contained_in_helper": self.crashes_contained,
                "failures": {"crashed": self.crashed, "hung": self.hung, "aborted": self.aborted, "lost": self.lost}}


# ---------------------------------------------------------------------- mutations

def random_mutant(data: bytes, rng: np.random.Generator) -> Mutant:
    """One random mutation: bit flips, a truncation, a zeroed block or a duplicated block."""
    size = len(data)
    kind = rng.choice(["bitflip", "truncate", "zero", "duplicate"])
    out = bytearray(data)
    if kind == "bitflip":
        positions = rng.integers(0, size, size=int(rng.integers(1, 9)))
        for position in positions:
            out[position] ^= 1 << int(rng.integers(0, 8))
        return Mutant(bytes(out), (int(positions.min()), int(positions.max()) + 1), "bitflip")
    if kind == "truncate":
        cut = int(rng.integers(0, size))
        return Mutant(bytes(out[:cut]), (cut, size), "truncate")
    length = int(rng.integers(1, 513))
    start = int(rng.integers(0, max(size - length, 1)))
    if kind == "zero":
        out[start:start + length] = bytes(min(length, size - start))
        return Mutant(bytes(out), (start, start + length), "zero")
    target = int(rng.integers(0, size))
    out[target:target] = data[start:start + length]
    return Mutant(bytes(out), (target, target + 1), "duplicate")


def slow5_header_mutants(data: bytes, binary: bool) -> list[Mutant]:
    """Targeted damage to a SLOW5/BLOW5 header: the fields pyslow5 trusts most."""
    mutants: list[Mutant] = []

    def put(offset: int, raw: bytes, kind: str) -> None:
        out = bytearray(data)
        out[offset:offset + len(raw)] = raw
        mutants.append(Mutant(bytes(out), (offset, offset + len(raw)), kind))

    if binary:
        for value in (0, 2, 7, 255):
            put(6, bytes([0, value, 0]), f"version 0.{value}.0")
        for value in (3, 9, 255):
            put(9, bytes([value]), f"record compression {value}")
            put(14, bytes([value]), f"signal compression {value}")
        for value in (0, 2, 1000, 2**32 - 1):
            put(10, struct.pack("<I", value), f"num_read_groups {value}")
        (text_size,) = struct.unpack_from("<I", data, 64)
        for value in (0, 1, text_size - 1, text_size + 1, text_size * 2, 2**32 - 1):
            put(64, struct.pack("<I", value), f"header size {value}")
        put(40, b"\x01", "reserved byte set")
        text_start, text_end = 68, 68 + text_size
    else:
        text_start, text_end = 0, data.index(b"\n#read_id") + 1
        text_end = data.index(b"\n", text_end) + 1
        put(0, b"#slow5_version\t0.9.0", "version 0.9.0")
        first = data.index(b"\n")
        mutants.append(Mutant(data[:first] + b"\r" + data[first:], (first, first + 1), "CRLF first line"))
        groups_at = data.index(b"#num_read_groups\t") + len(b"#num_read_groups\t")
        for value in (b"0", b"2", b"9", b"x"):
            put(groups_at, value, f"num_read_groups {value.decode()}")
    header = data[text_start:text_end]
    tabs = [i for i, byte in enumerate(header) if byte == 9]
    newlines = [i for i, byte in enumerate(header) if byte == 10]
    for which in (0, len(tabs) // 2, len(tabs) - 1):
        put(text_start + tabs[which], b" ", f"header tab {which} -> space")
    for which in (0, len(newlines) // 2, len(newlines) - 2, len(newlines) - 1):
        put(text_start + newlines[which], b"\t", f"header newline {which} -> tab")
    types_at = data.index(b"uint32_t", text_start)
    put(types_at, b"uint99_t", "column type")
    names_at = data.index(b"read_group", text_start)
    put(names_at, b"reab_group", "column name")
    for cut in (text_start + len(header) // 3, text_end - 2):
        mutants.append(Mutant(data[:cut], (cut, len(data)), "truncated header"))
    return mutants


# ---------------------------------------------------------------------- reading in a child

def _digest(record) -> str:
    """What decides a read's tokens: its raw samples, its calibration and its sampling rate."""
    digest = hashlib.sha1(np.ascontiguousarray(record.signal, dtype=np.int16).tobytes())
    digest.update(repr((record.offset, record.range, record.digitisation, record.sampling_rate)).encode())
    return digest.hexdigest()


def read_everything(path: str) -> dict:
    """What ``open_reads(path, on_error="skip")`` delivers: read id → signal digest, and the report."""
    from nst_hf.io import open_reads

    reads: dict[str, str] = {}
    skipped: list[tuple[str | None, str]] = []
    error = None
    try:
        with open_reads(path, on_error="skip") as source:
            for record in source:
                reads[record.read_id] = _digest(record)
        skipped = [(s.read_id, s.reason) for s in source.skipped]
    except BaseException as exc:  # what escapes under skip is the finding
        error = f"{type(exc).__name__}: {exc}"
    return {"reads": reads, "skipped": skipped, "error": error}


def _child(paths: list[str]) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    for path in paths:  # stdout is the pipe to the parent: one JSON line before and after each file
        sys.stdout.write(json.dumps({"start": path}) + "\n")
        sys.stdout.flush()
        sys.stdout.write(json.dumps({"path": path, **read_everything(path)}) + "\n")
        sys.stdout.flush()


def read_in_children(paths: list[str], timeout_s: float = BATCH_TIMEOUT_S) -> dict[str, dict]:
    """:func:`read_everything` for each path, in child processes; a crash or hang becomes an outcome."""
    outcomes: dict[str, dict] = {}
    todo = list(paths)
    while todo:
        command = [sys.executable, "-c", "import sys; from nst_hf.fuzzing import _child; _child(sys.argv[1:])", *todo]
        started = None
        try:
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  errors="replace", timeout=timeout_s)
            lines, returncode = proc.stdout.splitlines(), proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            lines, returncode = out.splitlines(), None
        for line in lines:
            item = json.loads(line)
            if "start" in item:
                started = item["start"]
            else:
                outcomes[item["path"]] = item
                started = None
        if started is None and returncode not in (0, None):
            started = next((p for p in todo if p not in outcomes), None)
        if started is not None:
            outcomes[started] = {"path": started, "crash": returncode}
        todo = [p for p in todo if p not in outcomes]
        if returncode == 0 and todo:  # pragma: no cover - a child that skipped files
            raise RuntimeError(f"the fuzzing child returned without reading {todo[:3]}")
    return outcomes


# ---------------------------------------------------------------------- accounting

def _record_spans(path: str) -> dict[str, tuple[int, int]] | None:
    """Byte span of every read's record in a clean SLOW5/BLOW5 file (``None`` for other formats)."""
    if not path.endswith((".slow5", ".blow5")):
        return None
    from nst_hf.io.slow5_layout import scan

    return {r.read_id: (r.start, r.end) for r in scan(path).records if r.read_id}


def account(clean: dict, spans: dict | None, mutant: Mutant, outcome: dict, name: str, result: CampaignResult) -> None:
    """Add one mutant's outcome to ``result``."""
    result.mutants += 1
    if "crash" in outcome:
        (result.hung if outcome["crash"] is None else result.crashed).append(f"{name} ({mutant.kind})")
        return
    if outcome["error"] is not None:
        result.aborted.append(f"{name} ({mutant.kind}): {outcome['error'][:200]}")
        return
    reported = {read_id for read_id, _ in outcome["skipped"]}
    # reads the mutant delivers or reports under ids the clean file does not have (a damaged id or group name)
    renamed = len((set(outcome["reads"]) | reported) - set(clean["reads"]) - {None})
    if any("pyslow5 crashes on it" in reason for _, reason in outcome["skipped"]):
        result.crashes_contained += 1
    file_reported = None in reported
    lost = []
    for read_id, digest in clean["reads"].items():
        delivered = outcome["reads"].get(read_id)
        if delivered == digest:
            continue
        if read_id in reported or file_reported:
            result.reads_reported += 1
            continue
        span = spans.get(read_id) if spans else None
        touched = span is not None and span[0] < mutant.touched[1] and mutant.touched[0] < span[1]
        if touched or (spans is None and (delivered is not None or renamed > 0)):
            renamed -= delivered is None
            result.reads_changed_by_mutation += 1
        else:
            lost.append(read_id)
    if lost:
        result.reads_lost += len(lost)
        result.lost.append(f"{name} ({mutant.kind}): {len(lost)} read(s) neither delivered nor reported")


def run_campaign(files: list[str], mutants_per_file: int, seed: int = 0, header_mutants: bool = True,
                 workdir: str | None = None) -> CampaignResult:
    """Fuzz each clean file with ``mutants_per_file`` random mutants (plus the targeted header ones)."""
    rng = np.random.default_rng(seed)
    result = CampaignResult()
    with tempfile.TemporaryDirectory(dir=workdir, prefix="nst_hf_fuzz_") as folder:
        cases = []
        for number, file in enumerate(map(str, files)):
            data = Path(file).read_bytes()
            suffix = Path(file).suffix
            mutants = [random_mutant(data, rng) for _ in range(mutants_per_file)]
            if header_mutants and suffix in (".slow5", ".blow5"):
                mutants += slow5_header_mutants(data, binary=suffix == ".blow5")
            for index, mutant in enumerate(mutants):
                path = os.path.join(folder, f"f{number}_m{index}{suffix}")
                Path(path).write_bytes(mutant.data)
                cases.append((file, path, mutant))
        cleans = read_in_children(sorted({file for file, _, _ in cases}))
        spans = {file: _record_spans(file) for file in cleans}
        outcomes = read_in_children([path for _, path, _ in cases])
        for file, path, mutant in cases:
            clean = cleans[file]
            if "crash" in clean or clean["error"] or clean["skipped"]:
                raise ValueError(f"{file} is not a clean file to fuzz: {clean}")
            account(clean, spans[file], mutant, outcomes[path], f"{Path(file).name}:{Path(path).name}", result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nst_hf.fuzzing", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="clean signal files to damage")
    parser.add_argument("--mutants", type=int, default=200, help="random mutants per file (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-header-mutants", action="store_true", help="only random mutations")
    args = parser.parse_args(argv)
    result = run_campaign(args.files, args.mutants, args.seed, header_mutants=not args.no_header_mutants)
    json.dump(result.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    failed = result.crashed or result.hung or result.aborted or result.lost
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
