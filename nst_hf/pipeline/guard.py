"""Where a run may write: never over, inside or around its inputs, never over what nst_hf did not
write, and never two runs on one output at once."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
from pathlib import Path

from nst_hf.output import is_temporary_name, printable_path

logger = logging.getLogger(__name__)

#: Written into every dataset folder nst_hf creates, so that only such a folder is ever replaced.
OUTPUT_MARKER = "nst_hf_output.json"
MANIFEST = "manifest.json"


def sidecars(output: Path) -> dict[str, Path]:
    return {"parts": output.with_name(output.name + ".parts"), "report": output.with_name(output.name + ".report.json"),
            "lock": output.with_name(output.name + ".lock")}


def check_output_location(output: Path, inputs, files: list[Path]) -> None:
    """Refuse an output (or its ``.parts``/``.report.json``/``.lock``) that is, or lies inside, an input
    file or directory, or that holds an input: nst_hf never writes over or beside-into what it reads."""
    input_files = {os.path.realpath(f) for f in files}
    input_dirs = {os.path.realpath(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
                  if os.path.isdir(p)}
    for target in (output, *sidecars(output).values()):
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


def is_nst_output(path: Path) -> bool:
    """Whether an existing path is an output an earlier nst_hf run wrote (so it may be replaced)."""
    if path.is_dir():
        return (path / OUTPUT_MARKER).is_file()
    if path.name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq

            return {"id", "text"} <= set(pq.read_schema(path).names)
        except Exception:
            return False
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
    return all(re.fullmatch(r"[0-9a-f]{20}(\.signal_ids)?", name) or name == MANIFEST
               or re.fullmatch(r"\.([0-9a-f]{20}(\.signal_ids)?|manifest\.json)\.\d+\.tmp", name) for name in names)


class OutputLock:
    """An advisory lock on ``<output>.lock``: one run per output. A killed run's lock frees itself."""

    def __init__(self, output: Path):
        self.output = output
        self.path = sidecars(output)["lock"]
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


def remove_leftovers(output: Path, parts_dir: Path) -> None:
    """Remove what killed runs on this output left: the temporary names of the output, its report and
    its parts folder beside it, and of the parts and the manifest inside an nst_hf parts folder."""
    ours = (output.name, sidecars(output)["report"].name, parts_dir.name)
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


def prepare_parts(output: Path, parts_dir: Path, settings: dict, resume: bool, overwrite: bool) -> dict:
    """Decide from what exists whether this run may start, and return its manifest."""
    if resume and overwrite:
        raise ValueError("--resume continues an interrupted run and --overwrite starts over: pass one of them")
    exists = output.exists() or output.is_symlink()
    if exists and not is_nst_output(output):
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
