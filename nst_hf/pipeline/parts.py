"""One input file → one part of the output, and the parts → the output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from nst_hf.output import AtomicJsonlWriter, AtomicWriter, atomic_path, atomic_write_json, printable_path
from nst_hf.pipeline.files import write_tokens
from nst_hf.pipeline.guard import OUTPUT_MARKER


def part_name(path: str) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:20]


def input_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"path": printable_path(os.path.abspath(path)), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class _ParquetPartWriter(AtomicWriter):
    """Rows ``{"id", "text"[, "input_ids"]}`` of one input file as Parquet, written atomically."""

    def __init__(self, path: Path, with_ids: bool):
        super().__init__(path)
        self.with_ids = with_ids
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

        schema = pa.schema([("id", pa.string()), ("text", pa.large_string())]
                           + ([("input_ids", pa.list_(pa.int32()))] if self.with_ids else []))
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, schema)
        self._writer.write_table(pa.Table.from_pylist(self.rows, schema=schema))
        self.rows = []

    def _close(self) -> None:
        if self.rows or self._writer is None:
            self._flush()
        self._writer.close()


def tokenize_part(tokenizer, path: str, part: str, fmt: str, token_type, on_error: str, with_ids: bool,
                       batch_samples: int, resample: bool, compressed: bool, on_read=None) -> dict:
    from nst_hf.io import open_reads

    writer = AtomicJsonlWriter(part, compressed) if fmt == "jsonl" else _ParquetPartWriter(Path(part), with_ids)
    with open_reads(path, on_error=on_error) as source, writer as out:
        summary = write_tokens(tokenizer, source, out, token_type, on_error, resample, batch_samples,
                                         return_ids=with_ids, on_read=on_read)
    return {"reads": summary.reads, "tokens": summary.tokens, "samples": summary.samples,
            "skipped": [s.to_dict() for s in summary.skipped]}


def assemble(parts: list[Path], output: Path, fmt: str, report_path: Path, summary) -> None:
    """Join the parts into ``output``; the report is written just before the output appears."""
    with atomic_path(output) as tmp:
        if fmt == "jsonl":  # parts are already (gzip members of) the output's bytes
            with open(tmp, "wb") as handle:
                for part in parts:
                    with open(part, "rb") as source:
                        shutil.copyfileobj(source, handle, 1 << 20)
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
            (tmp / OUTPUT_MARKER).write_text(json.dumps({"written_by": "nst_hf", "rows": summary.reads}) + "\n")
        atomic_write_json(report_path, summary.to_dict())


def retire(parts_dir: Path) -> None:
    """Remove the parts folder once the output is in place (renamed first, so a kill leaves no half folder)."""
    retired = parts_dir.with_name(f".{parts_dir.name}.{os.getpid()}.done.tmp")
    os.replace(parts_dir, retired)
    shutil.rmtree(retired, ignore_errors=True)
