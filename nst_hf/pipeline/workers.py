"""Worker processes for ``workers > 1``: each loads the tokenizer once, tokenizes whole files, and dies
with the run that started it."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from nst_hf.pipeline.parts import tokenize_part


_WORKER_TOKENIZER = None
_WORKER_PAIRING = None


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


def _init_worker(tokenizer, fingerprint: str, device, batch_windows, threads: int, parent_pid: int,
                 pairing=None) -> None:
    global _WORKER_TOKENIZER, _WORKER_PAIRING
    _die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    configure(tokenizer, device, batch_windows)
    if tokenizer.fingerprint() != fingerprint:  # pragma: no cover - a pickling bug, never silent
        raise RuntimeError("the tokenizer changed on its way to a worker process")
    _WORKER_TOKENIZER = tokenizer
    _WORKER_PAIRING = pairing  # sent once per worker (a basecall index can be large), not with every file


def _worker_task(*args) -> dict:
    return tokenize_part(_WORKER_TOKENIZER, *args, pairing=_WORKER_PAIRING)


def configure(tokenizer, device, batch_windows) -> None:
    if device and hasattr(tokenizer, "to"):
        tokenizer.to(device)
    if batch_windows and hasattr(tokenizer, "batch_windows"):
        tokenizer.batch_windows = batch_windows


def run_pool(tokenizer, fingerprint: str, todo: list[str], part_of, args: tuple, workers: int, device,
              batch_windows, record, bar, pairing=None) -> None:
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(tokenizer, fingerprint, device, batch_windows, threads, os.getpid(), pairing))
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
