"""Tokenize whole runs: many files → one output (JSON lines, Parquet or a saved ``datasets`` folder).

Each input file becomes one *part* in ``<output>.parts/``, written atomically when the file is done
and recorded in a manifest with the input's size and modification time. The final output is
assembled from the parts in input order and renamed into place; ``resume=True`` reuses every
finished part, so an interrupted run continues without duplicating or losing a read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nst_hf.io import SkippedRead, find_signal_files
from nst_hf.output import atomic_write_json
from nst_hf.tokenizers.base import TokenizeSummary

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet", "dataset")


@dataclass
class PipelineSummary(TokenizeSummary):
    """What a :func:`tokenize_inputs` run did (the CLI prints it and writes it as the JSON report)."""

    files: int = 0
    files_resumed: int = 0
    output: str = ""

    def to_dict(self) -> dict:
        return {"output": self.output, "files": self.files, "files_resumed": self.files_resumed,
                **TokenizeSummary.to_dict(self)}


def _part_name(path: str) -> str:
    return hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:20]


def _input_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class _PartWriter:
    """Rows ``{"id", "text"[, "input_ids"]}`` of one input file, as JSONL or Parquet, written atomically."""

    def __init__(self, path: Path, fmt: str, with_ids: bool):
        self.path, self.fmt, self.with_ids = path, fmt, with_ids
        self.tmp = path.with_name(path.name + ".tmp")
        self.rows: list[dict] = []
        self._handle = None
        self._writer = None

    def __enter__(self):
        if self.fmt == "jsonl":
            self._handle = open(self.tmp, "w", encoding="utf-8")
        return self

    def write(self, row: dict) -> None:
        if self._handle is not None:
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        self.rows.append(row)
        if len(self.rows) >= 256:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("text", pa.large_string())]
                           + ([("input_ids", pa.list_(pa.int32()))] if self.with_ids else []))
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, schema)
        self._writer.write_table(pa.Table.from_pylist(self.rows, schema=schema))
        self.rows = []

    def __exit__(self, exc_type, exc, tb):
        if self._handle is not None:
            self._handle.close()
        else:
            if self.rows or self._writer is None:
                self._flush()
            self._writer.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------- one worker

_TOKENIZER = None


def _init_worker(tokenizer_spec, load_kwargs, device, batch_windows, threads):
    global _TOKENIZER
    import torch

    from nst_hf.auto import load_tokenizer

    if threads:
        torch.set_num_threads(threads)
        try:
            import faiss

            faiss.omp_set_num_threads(threads)
        except ImportError:  # pragma: no cover
            pass
    tok = tokenizer_spec if not isinstance(tokenizer_spec, str) else load_tokenizer(tokenizer_spec, **load_kwargs)
    if device and hasattr(tok, "to"):
        tok.to(device)
    if batch_windows and hasattr(tok, "batch_windows"):
        tok.batch_windows = batch_windows
    _TOKENIZER = tok


def _tokenize_one_file(path: str, part: str, fmt: str, token_type, on_error: str, with_ids: bool,
                       batch_samples: int, resample: bool = False, on_read=None) -> dict:
    from nst_hf.io import open_reads

    writer_fmt = "jsonl" if fmt == "jsonl" else "parquet"
    with open_reads(path, on_error=on_error) as source, _PartWriter(Path(part), writer_fmt, with_ids) as out:
        summary = _TOKENIZER.write_tokens(source, out, token_type, on_error, resample, batch_samples,
                                          return_ids=with_ids, on_read=on_read)
    return {"reads": summary.reads, "tokens": summary.tokens, "samples": summary.samples,
            "skipped": [s.to_dict() for s in summary.skipped]}


# ---------------------------------------------------------------------- assembling the output

def _assemble(parts: list[Path], output: Path, fmt: str) -> None:
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        if fmt == "jsonl":
            import gzip

            opener = (lambda p: gzip.open(p, "wb", compresslevel=6)) if output.name.endswith(".gz") else \
                (lambda p: open(p, "wb"))
            with opener(tmp) as handle:
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
            if writer is None:
                raise ValueError("no input files, nothing to write")
            writer.close()
        else:
            from datasets import Dataset, concatenate_datasets

            datasets = [Dataset.from_parquet(str(p), keep_in_memory=True) for p in parts]
            concatenate_datasets(datasets).save_to_disk(str(tmp))
        if output.is_dir() and fmt == "dataset":
            shutil.rmtree(output)
        os.replace(tmp, output)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def tokenize_inputs(inputs, output, tokenizer="default", token_type: str | None = None, device: str | None = None,
                    batch_windows: int | None = None, batch_samples: int = 1_000_000, workers: int = 1,
                    fmt: str = "jsonl", resume: bool = False, on_error: str = "raise", return_ids: bool = False,
                    load_kwargs: dict | None = None, progress: bool | None = None,
                    resample: bool = False) -> PipelineSummary:
    """Tokenize every read of ``inputs`` (files/directories, any supported format) into ``output``.

    ``tokenizer`` is a loaded tokenizer or anything :func:`nst_hf.auto.load_tokenizer` accepts.
    ``resample=True`` resamples reads whose rate differs from the tokenizer's (otherwise they are errors).
    ``workers > 1`` tokenizes files in that many processes (each loads the tokenizer once and gets an
    equal share of the CPU threads). Output rows follow the input file order.
    """
    from tqdm.auto import tqdm

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    started = time.perf_counter()
    output = Path(output)
    files = [str(p) for p in find_signal_files(inputs)]
    if not files:
        raise ValueError(f"no FAST5/POD5/SLOW5/BLOW5 files found in {list(inputs)}")
    parts_dir = output.with_name(output.name + ".parts")
    manifest_path = parts_dir / "manifest.json"
    if parts_dir.exists() and not resume:
        raise FileExistsError(f"{parts_dir} exists from an interrupted run: pass --resume to continue it, "
                              "or delete it to start over")
    parts_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"parts": {}}
    settings = {"tokenizer": tokenizer if isinstance(tokenizer, str) else getattr(tokenizer, "name_or_path", "object"),
                "token_type": token_type, "format": fmt, "return_ids": return_ids, "resample": resample}
    if manifest.get("settings", settings) != settings:
        raise ValueError(f"--resume with different settings ({manifest['settings']} before, {settings} now); "
                         f"delete {parts_dir} to start over")
    manifest["settings"] = settings
    summary = PipelineSummary(files=len(files), output=str(output))
    todo = []
    for file in files:
        name = _part_name(file)
        done = manifest["parts"].get(name)
        if done and done["input"] == _input_stamp(file) and (parts_dir / name).exists():
            summary.files_resumed += 1
            _add_result(summary, done["result"])
        else:
            todo.append(file)
    if summary.files_resumed:
        logger.info("resuming: %d of %d files already done", summary.files_resumed, len(files))

    def record(file: str, result: dict) -> None:
        manifest["parts"][_part_name(file)] = {"input": _input_stamp(file), "result": result}
        atomic_write_json(manifest_path, manifest, indent=None)
        _add_result(summary, result)

    disable = None if progress is None else not progress  # None: shown on a terminal, quiet in pipes
    args = (token_type, on_error, return_ids, batch_samples, resample)
    if workers <= 1:
        _init_worker(tokenizer, load_kwargs or {}, device, batch_windows, None)
        bar = tqdm(unit=" reads", desc="tokenizing", disable=disable)
        seen = {"samples": 0}

        def on_read(samples: int) -> None:
            seen["samples"] += samples
            bar.update(1)
            bar.set_postfix(samples_per_s=f"{seen['samples'] / (time.perf_counter() - started):.3g}", refresh=False)

        for file in todo:
            record(file, _tokenize_one_file(file, str(parts_dir / _part_name(file)), fmt, *args, on_read=on_read))
    else:
        bar = tqdm(total=len(todo), unit=" files", desc="tokenizing", disable=disable)
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // workers)
        spec = tokenizer if isinstance(tokenizer, str) else tokenizer
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=(spec, load_kwargs or {}, device, batch_windows, threads)) as pool:
            futures = {pool.submit(_tokenize_one_file, file, str(parts_dir / _part_name(file)), fmt, *args): file
                       for file in todo}
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                record(futures[future], future.result())
                bar.update(1)
    bar.close()
    _assemble([parts_dir / _part_name(f) for f in files], output, fmt)
    shutil.rmtree(parts_dir)
    summary.seconds = time.perf_counter() - started
    return summary


def _add_result(summary: PipelineSummary, result: dict) -> None:
    summary.reads += result["reads"]
    summary.tokens += result["tokens"]
    summary.samples += result["samples"]
    summary.skipped += [SkippedRead(**s) for s in result["skipped"]]
