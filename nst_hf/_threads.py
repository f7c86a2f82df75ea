"""Per-process thread pools (a pool inherited through ``fork`` has no threads, so each process makes its own)."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
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


_DONE = object()


def ahead(items: Iterable, depth: int = 1) -> Iterator:
    """Yield ``items`` in order while a thread already produces the next ``depth`` of them.

    An exception of the producer is raised here, after the items before it. Closing this generator (or an
    exception in the consumer) stops the producer after the item it is making and waits for it, so that
    the caller may close what the items come from.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, never lost in the thread
            put((_DONE, exc))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="nst_hf-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
