"""A helper process that opens SLOW5/BLOW5 files with pyslow5 before the reader does.

pyslow5 can kill the process on damage that nst_hf's own header checks do not know. The reader
therefore first asks this helper to open each file and read its first record: if the helper dies,
the file is reported and skipped, and the run goes on (with a new helper). The helper is one
long-lived process per reading process (a fork costs ~20 ms in a process that holds torch); it runs
this file as a script, so it imports pyslow5 and nothing of nst_hf.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import subprocess
import sys
import threading

#: Seconds the helper may take to open one file and read its first record.
PROBE_TIMEOUT_S = 60.0

#: The helper opens files and does no arithmetic: it starts NumPy's BLAS with one thread, not one per core.
#: OpenBLAS' thread pool costs the helper's start ~0.1 s more CPU (0.18 against 0.33 s on a 2-core Xeon),
#: taken from the tokenizer, which holds every core, at the start of a run.
HELPER_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _serve() -> None:  # runs in the helper process
    import pyslow5

    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # pyslow5 prints to C stderr
    for line in sys.stdin.buffer:
        path = os.fsdecode(line.rstrip(b"\n"))
        try:
            handle = pyslow5.Open(path, "r")
            aux = "all" if handle.get_aux_names() else None
            for group in range(handle.get_num_read_groups()):
                handle.get_header_value("run_id", group)
            if aux and "end_reason" in (handle.get_aux_names() or []):
                handle.get_aux_enum_labels("end_reason")
            next(iter(handle.seq_reads(pA=False, aux=aux)), None)
            handle.close()
        except Exception:  # an exception is not a crash: the reader reports it itself
            pass
        sys.stdout.write("ok\n")
        sys.stdout.flush()


class Slow5Prober:
    """Client of the helper process; thread-safe, restarted after each crash and in forked children.

    :meth:`request` sends a path ahead, so that the helper opens the next file while this process works
    on the current one; :meth:`probe` then only collects the answer. The helper answers in order.
    """

    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._pending: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._process = None
        self._pending = collections.deque()
        self._lock = threading.Lock()

    def _send(self, path: str) -> bool:
        """Send ``path`` to the helper (started if needed); ``False`` if it could not be written."""
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, env={**os.environ, **HELPER_THREAD_ENV})
            self._pending.clear()
        try:
            self._process.stdin.write(os.fsencode(path) + b"\n")
            self._process.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def _answer(self) -> bytes | None:
        """The helper's next answer: ``b"ok\\n"``, ``b""`` (it died) or ``None`` (timed out)."""
        try:
            ready, _, _ = select.select([self._process.stdout], [], [], PROBE_TIMEOUT_S)
            return self._process.stdout.readline() if ready else None
        except (OSError, ValueError):
            return b""

    def _stop(self) -> int:
        self._process.kill()
        code = self._process.wait()
        self._process = None
        self._pending.clear()
        return code

    def request(self, path: str) -> None:
        """Have the helper start on ``path`` now; a later :meth:`probe` of it collects the answer."""
        with self._lock:
            if path not in self._pending and self._send(path):
                self._pending.append(path)

    def probe(self, path: str) -> str | None:
        """``None`` when pyslow5 opens ``path`` and reads its first record without dying, else what happened."""
        with self._lock:
            if self._pending and self._pending[0] != path:  # a request nobody reads (a damaged file is probed
                self._stop()  # through a copy): start afresh rather than wait for it, which may never end
            if self._pending:
                self._pending.popleft()
                answer = self._answer()
            else:
                answer = self._answer() if self._send(path) else b""
            if answer == b"ok\n":
                return None
            code = self._stop()
            if answer is None:
                return f"pyslow5 did not finish opening it within {PROBE_TIMEOUT_S:g} s"
            how = signal.Signals(-code).name if code < 0 else f"exit status {code}"
            return f"pyslow5 crashes on it ({how}) although its header passed nst_hf's checks"


if __name__ == "__main__":
    _serve()
