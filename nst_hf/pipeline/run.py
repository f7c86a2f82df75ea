"""The run: many files → one output, through resumable parts (see :mod:`nst_hf.pipeline`)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nst_hf._allocator import keep_freed_memory
from nst_hf.io import SkippedRead, find_signal_files, prepare_readers, prepare_to_read
from nst_hf.output import atomic_write_json, printable_path
from nst_hf.pipeline.files import TokenizeSummary
from nst_hf.pipeline.guard import MANIFEST, OutputLock, check_output_location, prepare_parts, remove_leftovers, \
    sidecars
from nst_hf.pipeline.parts import assemble, input_stamp, part_name, retire, tokenize_part, tokenize_parts
from nst_hf.pipeline.workers import configure, run_pool

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet", "dataset")


@dataclass
class PipelineSummary(TokenizeSummary):
    """What a :func:`tokenize_inputs` run did (the CLI prints it; it is written as ``OUTPUT.report.json``)."""

    files: int = 0
    files_resumed: int = 0
    output: str = ""
    tokenizer_fingerprint: str = ""
    non_utf8_paths: list[str] = field(default_factory=list)
    load_seconds: float = 0.0  # of ``seconds``: loading the tokenizer (0 when it came loaded)

    def to_dict(self) -> dict:
        data = {"output": printable_path(self.output), "files": self.files, "files_resumed": self.files_resumed,
                "tokenizer_fingerprint": self.tokenizer_fingerprint, **TokenizeSummary.to_dict(self),
                "load_seconds": self.load_seconds}
        for item in data["skipped"]:
            item["file"] = printable_path(item["file"])
        data["non_utf8_paths"] = self.non_utf8_paths
        return data

    def add(self, result: dict) -> None:
        """Count one finished part (a :func:`~nst_hf.pipeline.parts.tokenize_part` result)."""
        self.reads += result["reads"]
        self.tokens += result["tokens"]
        self.samples += result["samples"]
        self.skipped += [SkippedRead(**s) for s in result["skipped"]]


@dataclass
class PairsSummary(PipelineSummary):
    """What a :func:`pair_inputs` run did: ``reads`` counts the basecalls paired, ``rows`` their chunks."""

    rows: int = 0
    bases: int = 0

    def to_dict(self) -> dict:
        data = PipelineSummary.to_dict(self)
        data.update(rows=self.rows, bases=self.bases)
        return data

    def add(self, result: dict) -> None:
        PipelineSummary.add(self, result)
        self.rows += result["rows"]
        self.bases += result["bases"]


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
    with its reason. This is an entry point: it keeps freed heap memory for the process
    (:func:`nst_hf._allocator.keep_freed_memory`).
    """
    return _run(inputs, output, tokenizer, token_type, device, batch_windows, batch_samples, workers, fmt, resume,
                on_error, return_ids, load_kwargs, progress, resample, overwrite, None, PipelineSummary)


def pair_inputs(inputs, basecalls, output, tokenizer="default", chunk_size: int = 0, chunk_overlap: int = 0,
                token_type: str | None = None, device: str | None = None, batch_windows: int | None = None,
                batch_samples: int = 1_000_000, workers: int = 1, fmt: str = "jsonl", resume: bool = False,
                on_error: str = "raise", load_kwargs: dict | None = None, progress: bool | None = None,
                resample: bool = False, overwrite: bool = False, reference: str | None = None) -> PairsSummary:
    """Pair every read of ``inputs`` with its basecall (``basecalls``: SAM/BAM/CRAM/FASTQ files or folders, or
    an opened :class:`~nst_hf.io.basecalls.Basecalls`) into rows of :data:`nst_hf.pairs.PAIR_COLUMNS`.

    The run has :func:`tokenize_inputs`' guarantees (atomic output, ``resume``, report, progress, workers).
    Chunking: see :mod:`nst_hf.pairs`. A signal read without a basecall, a basecall without a signal read
    (found once every file is read) and a basecall that does not fit its signal are errors, or with
    ``on_error="skip"`` reported in ``OUTPUT.report.json`` with their reasons.
    """
    from nst_hf.io.basecalls import Basecalls, open_basecalls
    from nst_hf.pairs import Pairing

    calls = basecalls if isinstance(basecalls, Basecalls) else open_basecalls(basecalls, reference=reference)
    pairing = Pairing(calls, int(chunk_size), int(chunk_overlap))
    return _run(inputs, output, tokenizer, token_type, device, batch_windows, batch_samples, workers, fmt, resume,
                on_error, False, load_kwargs, progress, resample, overwrite, pairing, PairsSummary)


def _run(inputs, output, tokenizer, token_type, device, batch_windows, batch_samples, workers, fmt, resume,
         on_error, return_ids, load_kwargs, progress, resample, overwrite, pairing, summary_type):
    started = time.perf_counter()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    output = Path(os.fsdecode(output))
    files = [str(p) for p in find_signal_files(inputs)]
    if not files:
        raise ValueError(f"no FAST5/POD5/SLOW5/BLOW5 files found in {[printable_path(p) for p in inputs]}")
    if not resume and workers <= 1:  # every file is to do: begin the readers' start-up beside loading and checks
        prepare_readers(files)
    guarded = [Path(f) for f in files] + ([Path(f) for f in pairing.basecalls.files] if pairing else [])
    check_output_location(output, inputs, guarded)
    load_seconds = 0.0
    if isinstance(tokenizer, (str, os.PathLike)):
        from nst_hf.auto import load_tokenizer

        loading = time.perf_counter()
        tokenizer = load_tokenizer(str(tokenizer), **(load_kwargs or {}))
        load_seconds = time.perf_counter() - loading
    if pairing is not None:
        from nst_hf.pairs import check_chunking

        check_chunking(pairing.chunk_size, pairing.chunk_overlap, tokenizer.samples_per_token)
        tokenizer.num_levels(token_type)  # a bad token type fails before any work
    compressed = fmt == "jsonl" and output.name.endswith(".gz")
    fingerprint = tokenizer.fingerprint()
    settings = {"tokenizer": fingerprint, "token_type": token_type, "format": fmt, "compressed": compressed,
                "return_ids": return_ids, "resample": resample}
    if pairing is not None:
        settings["pairs"] = pairing.settings()
    paths = sidecars(output)
    with OutputLock(output):
        manifest = prepare_parts(output, paths["parts"], settings, resume, overwrite)
        remove_leftovers(output, paths["parts"])
        summary = summary_type(files=len(files), output=str(output), tokenizer_fingerprint=fingerprint,
                               load_seconds=load_seconds)
        summary.non_utf8_paths = [printable_path(f) for f in files if printable_path(f) != f]
        todo = _files_to_do(files, manifest, paths["parts"], summary)
        record = _recorder(manifest, paths["parts"], summary, todo)
        args = (fmt, token_type, on_error, return_ids, batch_samples, resample, compressed)
        disable = None if progress is None else not progress  # None: shown on a terminal, quiet in pipes
        keep_freed_memory()
        try:
            if workers <= 1:
                if resume:
                    prepare_readers(todo)
                _tokenize_here(tokenizer, todo, paths["parts"], args, device, batch_windows, record, disable, started,
                               pairing)
            else:
                _tokenize_in_workers(tokenizer, fingerprint, todo, paths["parts"], args, workers, device,
                                     batch_windows, record, disable, pairing)
        except BaseException:
            if not manifest["parts"]:  # nothing finished: leave nothing behind, so the next run needs no --resume
                shutil.rmtree(paths["parts"], ignore_errors=True)
            raise
        if pairing is not None:
            _report_calls_without_signal(pairing, [paths["parts"] / part_name(f) for f in files], on_error, summary)
        summary.seconds = time.perf_counter() - started
        assemble([paths["parts"] / part_name(f) for f in files], output, fmt, paths["report"], summary)
        retire(paths["parts"])
    return summary


def _report_calls_without_signal(pairing, parts: list[Path], on_error: str, summary) -> None:
    """Every basecall whose signal read none of the files held: an error, or skipped reads in the report."""
    from nst_hf.errors import InvalidReadError
    from nst_hf.pairs import calls_without_signal
    from nst_hf.pipeline.parts import signal_ids_path

    seen: set[str] = set()
    for part in parts:
        seen.update(signal_ids_path(str(part)).read_text().split())
    missing = calls_without_signal(pairing.basecalls, seen)
    if not missing:
        return
    if on_error == "raise":
        shown = ", ".join(m.read_id for m in missing[:3]) + (" …" if len(missing) > 3 else "")
        raise InvalidReadError(f"{len(missing)} basecall(s) have no signal read in the inputs ({shown}; "
                               f"{missing[0].error}); rerun with --resume --on-error skip to write the pairs and "
                               "list them in the report, or add the missing signal files")
    for item in missing:
        logger.warning("skipping basecall %s: %s", item.read_id, item.error)
    summary.skipped += [SkippedRead(m.file, m.read_id, m.error) for m in missing]


def _files_to_do(files: list[str], manifest: dict, parts_dir: Path, summary: PipelineSummary) -> list[str]:
    """The files without a finished part of the same input (counting the finished ones into ``summary``)."""
    todo = []
    for file in files:
        done = manifest["parts"].get(part_name(file))
        if done and done["input"] == input_stamp(file) and (parts_dir / part_name(file)).exists():
            summary.files_resumed += 1
            summary.add(done["result"])
        else:
            todo.append(file)
    if summary.files_resumed:
        logger.info("resuming: %d of %d files already done", summary.files_resumed, len(files))
    return todo


def _recorder(manifest: dict, parts_dir: Path, summary: PipelineSummary, todo: list[str]):
    """A callback that records a finished part in the manifest (durably) and in ``summary``."""
    stamps = {file: input_stamp(file) for file in todo}  # before reading: a file changed meanwhile is redone

    def record(file: str, result: dict) -> None:
        manifest["parts"][part_name(file)] = {"input": stamps[file], "result": result}
        atomic_write_json(parts_dir / MANIFEST, manifest, indent=None)
        summary.add(result)

    return record


def _tokenize_here(tokenizer, todo: list[str], parts_dir: Path, args: tuple, device, batch_windows, record,
                   disable, started: float, pairing=None) -> None:
    """Tokenize the files in this process, as one stream of reads (batches span files), a part per file.

    The progress bar counts input bytes, so it has a total and an ETA: each read advances it by its raw size
    (2 bytes a sample) within its file, and a finished file tops it up to the file's size.
    """
    from tqdm.auto import tqdm

    configure(tokenizer, device, batch_windows)
    sizes = {file: os.path.getsize(file) for file in todo}
    counted = dict.fromkeys(todo, 0)
    bar = tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, unit_divisor=1024, desc="tokenizing",
               disable=disable)
    reads = samples = 0

    def on_read(file: str, read_samples: int) -> None:
        nonlocal reads, samples
        reads, samples = reads + 1, samples + read_samples
        step = min(2 * read_samples, sizes[file] - counted[file])
        counted[file] += step
        bar.update(step)
        bar.set_postfix(reads=reads, samples_per_s=f"{samples / (time.perf_counter() - started):.3g}", refresh=False)

    def on_done(file: str, result: dict) -> None:
        record(file, result)
        bar.update(sizes[file] - counted[file])

    parts = [str(parts_dir / part_name(file)) for file in todo]
    if pairing is None:
        tokenize_parts(tokenizer, todo, parts, *args, on_done=on_done, on_read=on_read)
    else:  # pairs: a file at a time
        for number, (file, part) in enumerate(zip(todo, parts)):
            following = todo[number + 1] if number + 1 < len(todo) else None
            on_done(file, tokenize_part(tokenizer, file, part, *args, on_read=_counting(file, following, on_read),
                                        pairing=pairing))
    bar.close()


def _counting(file: str, following: str | None, on_read):
    """``on_read(file, n)`` as a one-file reader's callback; the first read also begins ``following``'s start-up
    (its own checks are done by then, so the two do not compete)."""
    def counted(read_samples: int) -> None:
        nonlocal following
        if following is not None:
            prepare_to_read(following)
            following = None
        on_read(file, read_samples)

    return counted


def _tokenize_in_workers(tokenizer, fingerprint: str, todo: list[str], parts_dir: Path, args: tuple, workers: int,
                         device, batch_windows, record, disable, pairing=None) -> None:
    """Tokenize the files in ``workers`` processes, with a files progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit=" files", desc="tokenizing", disable=disable)
    run_pool(tokenizer, fingerprint, todo, lambda file: str(parts_dir / part_name(file)), args, workers, device,
             batch_windows, record, bar, pairing)
    bar.close()
