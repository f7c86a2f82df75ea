"""One input file → one part of the output, and the parts → the output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from nst_hf.output import AtomicJsonlWriter, AtomicWriter, append_file, atomic_path, atomic_write_json, \
    atomic_write_text, printable_path
from nst_hf.pipeline.files import TokenizeSummary, write_outcome
from nst_hf.pipeline.guard import OUTPUT_MARKER


def part_name(path: str) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:20]


def input_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"path": printable_path(os.path.abspath(path)), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def token_schema(with_ids: bool):
    """Parquet schema of ``nst-hf tokenize`` rows."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("text", pa.large_string())]
                     + ([("input_ids", pa.list_(pa.int32()))] if with_ids else []))


def pair_schema():
    """Parquet schema of ``nst-hf pairs`` rows (:data:`nst_hf.pairs.PAIR_COLUMNS`)."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("read_id", pa.string()), ("chunk_start", pa.int64()),
                      ("chunk_size", pa.int64()), ("text", pa.large_string()), ("bases", pa.large_string()),
                      ("base_starts", pa.list_(pa.int32()))])


class _ParquetPartWriter(AtomicWriter):
    """Rows of one input file as Parquet (``schema``: a callable giving the pyarrow schema), written atomically."""

    def __init__(self, path: Path, schema):
        super().__init__(path)
        self.schema = schema
        self.rows: list[dict] = []
        self._tmp = None
        self._writer = None

    def _open(self, tmp: Path) -> None:
        self._tmp = tmp

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= 256:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = self.schema()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, schema)
        self._writer.write_table(pa.Table.from_pylist(self.rows, schema=schema))
        self.rows = []

    def _close(self) -> None:
        if self.rows or self._writer is None:
            self._flush()
        self._writer.close()


def tokenize_part(tokenizer, path: str, part: str, fmt: str, token_type, on_error: str, with_ids: bool,
                  batch_samples: int, resample: bool, compressed: bool, on_read=None, pairing=None) -> dict:
    """Tokenize (or, with ``pairing``, pair) the reads of one input file into the part file ``part``
    (``on_read(num_samples)`` after every read)."""
    if pairing is not None:
        return pair_part(tokenizer, path, part, fmt, token_type, on_error, batch_samples, resample, compressed,
                         pairing, on_read)
    results: list[dict] = []
    tokenize_parts(tokenizer, [path], [part], fmt, token_type, on_error, with_ids, batch_samples, resample,
                   compressed, on_done=lambda _, result: results.append(result),
                   on_read=None if on_read is None else lambda _, num_samples: on_read(num_samples))
    return results[0]


def tokenize_parts(tokenizer, files: list[str], parts: list[str], fmt: str, token_type, on_error: str,
                   with_ids: bool, batch_samples: int, resample: bool, compressed: bool, on_done,
                   on_read=None) -> None:
    """Tokenize the reads of ``files`` as one stream into one part per file (``parts[i]`` for ``files[i]``).

    Encoder batches span files, as they span reads held in memory, so a folder of small files is encoded in
    full batches. Outcomes come back in reading order: a file's part is complete, and ``on_done(file,
    result)`` (a :func:`tokenize_part` result) is called, once the first outcome of a later file arrives,
    or at the end. ``on_read(file, num_samples)`` follows every read. A failure (``on_error="raise"``) is
    raised once the files before it are done: it removes only the part of the file that failed.
    """
    from collections import deque

    from nst_hf.io import open_reads

    source = open_reads(files, on_error=on_error)
    names = [str(path) for path in source.files]
    if len(names) != len(files):
        raise ValueError(f"tokenize_parts needs distinct signal files, got {len(files)} paths for {len(names)} files")
    origin: deque[int] = deque()  # the file of each read handed to the tokenizer, in order
    failure: list[tuple[int, Exception]] = []  # a file that could not be read (on_error="raise")

    def records():
        try:
            for record in source:
                origin.append(source.file_number)
                yield record
        except Exception as exc:  # noqa: BLE001 - raised below, once the reads before it are written
            failure.append((source.file_number, exc))

    writer, summary, current = None, TokenizeSummary(), 0
    writing: int | None = None  # the file of the read being written
    finishing = False  # a part being closed and recorded (if that fails, it is not tried again)

    def open_part():
        part = AtomicJsonlWriter(parts[current], compressed) if fmt == "jsonl" else \
            _ParquetPartWriter(Path(parts[current]), lambda: token_schema(with_ids))
        part.__enter__()
        return part

    def finish_part() -> None:
        nonlocal writer, summary, current, finishing
        finishing = True
        done = writer or open_part()
        writer = None
        done.__exit__(None, None, None)
        skipped = [s for s in source.skipped if s.file == names[current]] + summary.skipped
        on_done(files[current], {"reads": summary.reads, "tokens": summary.tokens, "samples": summary.samples,
                                 "skipped": [s.to_dict() for s in skipped]})
        summary, current, finishing = TokenizeSummary(), current + 1, False

    try:
        with source:
            for record, codes, error in tokenizer.iter_tokenized(records(), token_type, on_error, resample,
                                                                 batch_samples):
                index = origin.popleft()
                while current < index:
                    finish_part()
                writing = index
                writer = writer or open_part()
                write_outcome(tokenizer, record, codes, error, writer, summary, with_ids)
                writing = None
                if on_read is not None:
                    on_read(files[index], record.num_samples)
            if failure:
                raise failure[0][1]
            while current < len(files):
                finish_part()
    except BaseException as exc:
        if isinstance(exc, Exception) and not finishing:  # keep the parts of the files before the failure:
            # the earliest of the read being written, the first read not yet written and the file unread
            known = [i for i in (writing, origin[0] if origin else None, failure[0][0] if failure else None)
                     if i is not None]
            while current < min(known, default=current):
                finish_part()
        if writer is not None:
            writer.__exit__(type(exc), exc, exc.__traceback__)
        raise


def signal_ids_path(part: str) -> Path:
    """The sidecar of a pairs part listing the signal read ids its input file held."""
    return Path(part + ".signal_ids")


def pair_part(tokenizer, path: str, part: str, fmt: str, token_type, on_error: str, batch_samples: int,
              resample: bool, compressed: bool, pairing, on_read=None) -> dict:
    """Pair the reads of one input file with their basecalls (``pairing``: :class:`nst_hf.pairs.Pairing`) into
    ``part``; the signal read ids met go to :func:`signal_ids_path` (written before the part counts as done)."""
    from nst_hf.io import open_reads
    from nst_hf.pairs import iter_pairs

    writer = AtomicJsonlWriter(part, compressed) if fmt == "jsonl" else _ParquetPartWriter(Path(part), pair_schema)
    seen: set[str] = set()
    result = {"reads": 0, "rows": 0, "tokens": 0, "bases": 0, "samples": 0, "skipped": []}
    with open_reads(path, on_error=on_error) as source, writer as out:
        def records():
            for record in source:
                yield record
                if on_read is not None:
                    on_read(record.num_samples)

        for outcome in iter_pairs(tokenizer, records(), pairing.basecalls, pairing.chunk_size, pairing.chunk_overlap,
                                  token_type, on_error, resample, batch_samples, seen=seen):
            if outcome.error is not None:
                result["skipped"].append({"file": outcome.file, "read_id": outcome.read_id, "reason": outcome.error})
                continue
            for row in outcome.rows:
                out.write(row)
                result["tokens"] += row["text"].count("<|")
                result["bases"] += len(row["bases"])
            result["reads"] += 1
            result["rows"] += len(outcome.rows)
            result["samples"] += outcome.samples
        result["skipped"][:0] = [s.to_dict() for s in source.skipped]
    atomic_write_text(signal_ids_path(part), "".join(f"{read_id}\n" for read_id in sorted(seen)))
    return result


def assemble(parts: list[Path], output: Path, fmt: str, report_path: Path, summary) -> None:
    """Join the parts into ``output``; the report is written just before the output appears."""
    with atomic_path(output) as tmp:
        if fmt == "jsonl":  # parts are already (gzip members of) the output's bytes
            with open(tmp, "wb") as handle:
                for part in parts:
                    append_file(part, handle)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            writer = None
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            writer.close()
        else:
            from datasets import Dataset, concatenate_datasets

            datasets = [Dataset.from_parquet(str(p), keep_in_memory=True) for p in parts]
            concatenate_datasets(datasets).save_to_disk(str(tmp))
            rows = getattr(summary, "rows", summary.reads)
            (tmp / OUTPUT_MARKER).write_text(json.dumps({"written_by": "nst_hf", "rows": rows}) + "\n")
        atomic_write_json(report_path, summary.to_dict())


def retire(parts_dir: Path) -> None:
    """Remove the parts folder once the output is in place (renamed first, so a kill leaves no half folder)."""
    retired = parts_dir.with_name(f".{parts_dir.name}.{os.getpid()}.done.tmp")
    os.replace(parts_dir, retired)
    shutil.rmtree(retired, ignore_errors=True)
