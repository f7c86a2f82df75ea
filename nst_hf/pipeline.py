"""Tokenize whole runs: many files → one output (JSON lines, Parquet or a saved ``datasets`` folder).

Each input file becomes one *part* in ``<output>.parts/``, written atomically when the file is done
and recorded in a manifest with the input's size and modification time and the tokenizer's
fingerprint. The final output is assembled from the parts in input order and renamed into place;
``resume=True`` reuses every finished part, so an interrupted run continues without duplicating or
losing a read, and never mixes the tokens of two tokenizers.

What a run will not do: write over or inside its inputs, replace anything that is not an earlier
nst_hf output, replace an earlier output without ``overwrite=True`` (and then only once the new one is
complete), or share its output with a second run (an advisory lock refuses the second at once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from nst_hf.io import SkippedRead, find_signal_files
from nst_hf.output import AtomicJsonlWriter, AtomicWriter, atomic_path, atomic_write_json, is_temporary_name
from nst_hf.tokenizers.base import TokenizeSummary

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet", "dataset")
#: Written into every dataset folder nst_hf creates, so that only such a folder is ever replaced.
OUTPUT_MARKER = "nst_hf_output.json"
MANIFEST = "manifest.json"


def printable_path(path: str | os.PathLike) -> str:
    """A path as text that JSON and terminals accept (undecodable bytes as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


@dataclass
class PipelineSummary(TokenizeSummary):
    """What a :func:`tokenize_inputs` run did (the CLI prints it; it is written as ``OUTPUT.report.json``)."""

    files: int = 0
    files_resumed: int = 0
    output: str = ""
    tokenizer_fingerprint: str = ""
    non_utf8_paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = {"output": printable_path(self.output), "files": self.files, "files_resumed": self.files_resumed,
                "tokenizer_fingerprint": self.tokenizer_fingerprint, **TokenizeSummary.to_dict(self)}
        for item in data["skipped"]:
            item["file"] = printable_path(item["file"])
        data["non_utf8_paths"] = self.non_utf8_paths
        return data


def _part_name(path: str) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:20]


def _input_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"path": printable_path(os.path.abspath(path)), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


# ---------------------------------------------------------------------- output safety

def _sidecars(output: Path) -> dict[str, Path]:
    return {"parts": output.with_name(output.name + ".parts"), "report": output.with_name(output.name + ".report.json"),
            "lock": output.with_name(output.name + ".lock")}


def check_output_location(output: Path, inputs, files: list[Path]) -> None:
    """Refuse an output (or its ``.parts``/``.report.json``/``.lock``) that is, or lies inside, an input
    file or directory, or that holds an input: nst_hf never writes over or beside-into what it reads."""
    input_files = {os.path.realpath(f) for f in files}
    input_dirs = {os.path.realpath(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
                  if os.path.isdir(p)}
    for target in (output, *_sidecars(output).values()):
        real = os.path.realpath(target)
        if real in input_files:
            raise ValueError(f"output {printable_path(output)}: {printable_path(target)} is one of the input files; "
                             "nst-hf never writes over its inputs: choose another -o")
        for folder in input_dirs:
            if real == folder or real.startswith(folder.rstrip(os.sep) + os.sep):
                raise ValueError(f"output {printable_path(output)} lies inside the input directory "
                                 f"{printable_path(folder)}; write it elsewhere so the inputs stay untouched")
        inside = next((f for f in input_files if f.startswith(real.rstrip(os.sep) + os.sep)), None)
        if inside is not None:
            raise ValueError(f"output {printable_path(output)} contains the input {printable_path(inside)}; "
                             "choose another -o")


def _is_nst_output(path: Path) -> bool:
    """Whether an existing path is an output an earlier nst_hf run wrote (so it may be replaced)."""
    if path.is_dir():
        return (path / OUTPUT_MARKER).is_file()
    if path.name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq

            return {"id", "text"} <= set(pq.read_schema(path).names)
        except Exception:
            return False
    import gzip

    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            line = handle.readline()
        return line == "" or {"id", "text"} <= set(json.loads(line))
    except (OSError, ValueError, UnicodeDecodeError, TypeError, EOFError):
        return False


def _is_parts_folder(folder: Path) -> bool:
    """Whether ``folder`` holds only what nst_hf puts in a parts folder (parts, manifest, their temporaries)."""
    names = [p.name for p in folder.iterdir()]
    return all(re.fullmatch(r"[0-9a-f]{20}", name) or name == MANIFEST
               or re.fullmatch(r"\.([0-9a-f]{20}|manifest\.json)\.\d+\.tmp", name) for name in names)


class OutputLock:
    """An advisory lock on ``<output>.lock``: one run per output. A killed run's lock frees itself."""

    def __init__(self, output: Path):
        self.output = output
        self.path = _sidecars(output)["lock"]
        self._handle = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as exc:
                raise FileExistsError(f"{printable_path(self.path)} cannot be used as the run's lock file "
                                      f"({exc.strerror}); move it away or choose another -o") from exc
            handle = os.fdopen(fd, "r+")
            content = handle.read(64)
            if content.strip() and not content.strip().isdigit():
                handle.close()
                raise FileExistsError(f"{printable_path(self.path)} exists and is not an nst-hf lock file; "
                                      "move it away or choose another -o")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "?"
                handle.close()
                raise FileExistsError(f"another nst-hf run (pid {owner}) is writing {printable_path(self.output)}; "
                                      "wait for it to finish or choose another -o") from None
            try:  # the file may have been removed by the run that held it before we locked it
                if os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._handle.close()


def _remove_leftovers(output: Path, parts_dir: Path) -> None:
    """Remove what killed runs on this output left: the temporary names of the output, its report and
    its parts folder beside it, and of the parts and the manifest inside an nst_hf parts folder."""
    ours = (output.name, _sidecars(output)["report"].name, parts_dir.name)
    candidates = [p for p in output.parent.iterdir() if any(is_temporary_name(p.name, of) for of in ours)] \
        if output.parent.is_dir() else []
    if parts_dir.is_dir() and _is_parts_folder(parts_dir):
        candidates += [p for p in parts_dir.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for leftover in candidates:
        logger.info("removing %s, left by an interrupted run", printable_path(leftover))
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _prepare_parts(output: Path, parts_dir: Path, settings: dict, resume: bool, overwrite: bool) -> dict:
    """Decide from what exists whether this run may start, and return its manifest."""
    if resume and overwrite:
        raise ValueError("--resume continues an interrupted run and --overwrite starts over: pass one of them")
    exists = output.exists() or output.is_symlink()
    if exists and not _is_nst_output(output):
        raise FileExistsError(f"{printable_path(output)} exists and is not an nst_hf output; nst-hf never replaces "
                              "other files or folders: choose another -o")
    if parts_dir.exists():
        if not parts_dir.is_dir() or not _is_parts_folder(parts_dir):
            raise FileExistsError(f"{printable_path(parts_dir)} exists and is not an nst_hf parts folder; "
                                  "move it away or choose another -o")
        if overwrite:
            shutil.rmtree(parts_dir)
        elif not resume:
            raise FileExistsError(f"{printable_path(parts_dir)} exists from an interrupted run: pass --resume to "
                                  "continue it, or --overwrite to start over")
    elif exists and not overwrite:
        hint = " (--resume continues an interrupted run; this one finished)" if resume else ""
        raise FileExistsError(f"{printable_path(output)} exists (an earlier nst_hf output): pass --overwrite to replace "
                              f"it once the new output is complete{hint}")
    parts_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = parts_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"settings": settings, "parts": {}}
    before = manifest.get("settings", {})
    if before != settings:
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        raise ValueError(f"--resume with a different {', '.join(changed)} than the interrupted run "
                         f"({', '.join(f'{k}: {before.get(k)!r} before, {settings.get(k)!r} now' for k in changed)}); "
                         "its parts would mix tokens: pass --overwrite to start over")
    return manifest


# ---------------------------------------------------------------------- one file → one part

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


def _tokenize_one_file(tokenizer, path: str, part: str, fmt: str, token_type, on_error: str, with_ids: bool,
                       batch_samples: int, resample: bool, compressed: bool, on_read=None) -> dict:
    from nst_hf.io import open_reads

    writer = AtomicJsonlWriter(part, compressed) if fmt == "jsonl" else _ParquetPartWriter(Path(part), with_ids)
    with open_reads(path, on_error=on_error) as source, writer as out:
        summary = tokenizer.write_tokens(source, out, token_type, on_error, resample, batch_samples,
                                         return_ids=with_ids, on_read=on_read)
    return {"reads": summary.reads, "tokens": summary.tokens, "samples": summary.samples,
            "skipped": [s.to_dict() for s in summary.skipped]}


# ---------------------------------------------------------------------- worker processes

_WORKER_TOKENIZER = None


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(0.5)


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the run that started it dies (even by SIGKILL), instead of tokenizing on."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - another libc
            pass
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="nst_hf-parent-watch", daemon=True).start()


def _init_worker(tokenizer, fingerprint: str, device, batch_windows, threads: int, parent_pid: int) -> None:
    global _WORKER_TOKENIZER
    _die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    _configure(tokenizer, device, batch_windows)
    if tokenizer.fingerprint() != fingerprint:  # pragma: no cover - a pickling bug, never silent
        raise RuntimeError("the tokenizer changed on its way to a worker process")
    _WORKER_TOKENIZER = tokenizer


def _worker_task(*args) -> dict:
    return _tokenize_one_file(_WORKER_TOKENIZER, *args)


def _configure(tokenizer, device, batch_windows) -> None:
    if device and hasattr(tokenizer, "to"):
        tokenizer.to(device)
    if batch_windows and hasattr(tokenizer, "batch_windows"):
        tokenizer.batch_windows = batch_windows


def _run_pool(tokenizer, fingerprint: str, todo: list[str], part_of, args: tuple, workers: int, device,
              batch_windows, record, bar) -> None:
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(tokenizer, fingerprint, device, batch_windows, threads, os.getpid()))
    try:
        futures = {pool.submit(_worker_task, file, part_of(file), *args): file for file in todo}
        for future in as_completed(futures):
            record(futures[future], future.result())
            bar.update(1)
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):  # do not wait for running files
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


# ---------------------------------------------------------------------- assembling the output

def _assemble(parts: list[Path], output: Path, fmt: str, report_path: Path, summary: PipelineSummary) -> None:
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


def _retire(parts_dir: Path) -> None:
    """Remove the parts folder once the output is in place (renamed first, so a kill leaves no half folder)."""
    retired = parts_dir.with_name(f".{parts_dir.name}.{os.getpid()}.done.tmp")
    os.replace(parts_dir, retired)
    shutil.rmtree(retired, ignore_errors=True)


# ---------------------------------------------------------------------- the run

def tokenize_inputs(inputs, output, tokenizer="default", token_type: str | None = None, device: str | None = None,
                    batch_windows: int | None = None, batch_samples: int = 1_000_000, workers: int = 1,
                    fmt: str = "jsonl", resume: bool = False, on_error: str = "raise", return_ids: bool = False,
                    load_kwargs: dict | None = None, progress: bool | None = None,
                    resample: bool = False, overwrite: bool = False) -> PipelineSummary:
    """Tokenize every read of ``inputs`` (files/directories, any supported format) into ``output``.

    ``tokenizer`` is a loaded tokenizer or anything :func:`nst_hf.auto.load_tokenizer` accepts.
    ``resample=True`` resamples reads whose rate differs from the tokenizer's (otherwise they are errors).
    ``workers > 1`` tokenizes files in that many processes (each gets an equal share of the CPU
    threads). Output rows follow the input file order. ``resume=True`` continues an interrupted run
    with the same tokenizer (by content) and settings; ``overwrite=True`` replaces an earlier nst_hf
    output once the new one is complete. ``OUTPUT.report.json`` lists every read not in the output
    with its reason.
    """
    from tqdm.auto import tqdm

    from nst_hf._allocator import keep_freed_memory

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    started = time.perf_counter()
    output = Path(os.fsdecode(output))
    files = [str(p) for p in find_signal_files(inputs)]
    if not files:
        raise ValueError(f"no FAST5/POD5/SLOW5/BLOW5 files found in {[printable_path(p) for p in inputs]}")
    check_output_location(output, inputs, [Path(f) for f in files])
    if isinstance(tokenizer, (str, os.PathLike)):
        from nst_hf.auto import load_tokenizer

        tokenizer = load_tokenizer(str(tokenizer), **(load_kwargs or {}))
    compressed = fmt == "jsonl" and output.name.endswith(".gz")
    fingerprint = tokenizer.fingerprint()
    settings = {"tokenizer": fingerprint, "token_type": token_type, "format": fmt, "compressed": compressed,
                "return_ids": return_ids, "resample": resample}
    sidecars = _sidecars(output)
    parts_dir = sidecars["parts"]
    with OutputLock(output):
        manifest = _prepare_parts(output, parts_dir, settings, resume, overwrite)
        _remove_leftovers(output, parts_dir)
        summary = PipelineSummary(files=len(files), output=str(output), tokenizer_fingerprint=fingerprint)
        summary.non_utf8_paths = [printable_path(f) for f in files if printable_path(f) != f]
        todo = []
        for file in files:
            done = manifest["parts"].get(_part_name(file))
            if done and done["input"] == _input_stamp(file) and (parts_dir / _part_name(file)).exists():
                summary.files_resumed += 1
                _add_result(summary, done["result"])
            else:
                todo.append(file)
        if summary.files_resumed:
            logger.info("resuming: %d of %d files already done", summary.files_resumed, len(files))

        stamps = {file: _input_stamp(file) for file in todo}  # before reading: a file changed meanwhile is redone

        def record(file: str, result: dict) -> None:
            manifest["parts"][_part_name(file)] = {"input": stamps[file], "result": result}
            atomic_write_json(parts_dir / MANIFEST, manifest, indent=None)
            _add_result(summary, result)

        def part_of(file: str) -> str:
            return str(parts_dir / _part_name(file))

        disable = None if progress is None else not progress  # None: shown on a terminal, quiet in pipes
        args = (fmt, token_type, on_error, return_ids, batch_samples, resample, compressed)
        keep_freed_memory()
        if workers <= 1:
            _configure(tokenizer, device, batch_windows)
            bar = tqdm(unit=" reads", desc="tokenizing", disable=disable)
            seen = 0

            def on_read(samples: int) -> None:
                nonlocal seen
                seen += samples
                bar.update(1)
                bar.set_postfix(samples_per_s=f"{seen / (time.perf_counter() - started):.3g}", refresh=False)

            for file in todo:
                record(file, _tokenize_one_file(tokenizer, file, part_of(file), *args, on_read=on_read))
        else:
            bar = tqdm(total=len(todo), unit=" files", desc="tokenizing", disable=disable)
            _run_pool(tokenizer, fingerprint, todo, part_of, args, workers, device, batch_windows, record, bar)
        bar.close()
        summary.seconds = time.perf_counter() - started
        _assemble([parts_dir / _part_name(f) for f in files], output, fmt, sidecars["report"], summary)
        _retire(parts_dir)
    return summary


def _add_result(summary: PipelineSummary, result: dict) -> None:
    summary.reads += result["reads"]
    summary.tokens += result["tokens"]
    summary.samples += result["samples"]
    summary.skipped += [SkippedRead(**s) for s in result["skipped"]]
