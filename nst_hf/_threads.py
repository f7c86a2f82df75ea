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


def run_in_ranges(name: str, function, total: int, threads: int, granule: int = 1) -> None:
    """Call ``function(start, stop)`` on contiguous ranges covering ``range(total)``, at most one per thread.

    Ranges are a multiple of ``granule`` long (the last may be shorter). A single range runs in the
    caller's thread; otherwise they run on the pool ``name`` and the first exception is raised here.
    """
    if total <= 0:
        return
    threads = max(1, int(threads))
    share = -(-total // (threads * granule)) * granule
    ranges = [(start, min(total, start + share)) for start in range(0, total, share)]
    if len(ranges) == 1:
        function(*ranges[0])
        return
    pool = thread_pool(name, threads)
    for future in [pool.submit(function, start, stop) for start, stop in ranges]:
        future.result()


def compute_threads() -> int:
    """Threads for native compute: torch's intra-op setting (which the pipeline's workers lower), else the CPUs."""
    import sys

    if "torch" in sys.modules:
        return max(1, sys.modules["torch"].get_num_threads())
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
