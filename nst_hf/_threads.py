"""Per-process thread pools (a pool inherited through ``fork`` has no threads, so each process makes its own)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pools: dict[tuple[str, int], tuple[int, ThreadPoolExecutor]] = {}
_lock = threading.Lock()


def thread_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The process's pool called ``name`` with ``workers`` threads, made on first use in each process."""
    key = (name, workers)
    with _lock:
        entry = _pools.get(key)
        if entry is None or entry[0] != os.getpid():
            entry = (os.getpid(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"nst_hf-{name}"))
            _pools[key] = entry
        return entry[1]


def compute_threads() -> int:
    """Threads for native compute: torch's intra-op setting (which the pipeline's workers lower), else the CPUs."""
    import sys

    if "torch" in sys.modules:
        return max(1, sys.modules["torch"].get_num_threads())
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
