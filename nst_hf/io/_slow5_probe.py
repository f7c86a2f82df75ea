"""A helper process that opens SLOW5/BLOW5 files with pyslow5 before the reader does.

pyslow5 can kill the process on damage that nst_hf's own header checks do not know. The reader
therefore first asks this helper to open each file and read its first record: if the helper dies,
the file is reported and skipped, and the run goes on (with a new helper). The helper is one
long-lived process per reading process (a fork costs ~20 ms in a process that holds torch); it runs
this file as a script, so it imports pyslow5 and nothing of nst_hf.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading

#: Seconds the helper may take to open one file and read its first record.
PROBE_TIMEOUT_S = 60.0


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
    """Client of the helper process; thread-safe, restarted after each crash and in forked children."""

    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._process = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def probe(self, path: str) -> str | None:
        """``None`` when pyslow5 opens ``path`` and reads its first record without dying, else what happened."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            process = self._process
            try:
                process.stdin.write(os.fsencode(path) + b"\n")
                process.stdin.flush()
                ready, _, _ = select.select([process.stdout], [], [], PROBE_TIMEOUT_S)
                answer = process.stdout.readline() if ready else None
            except (BrokenPipeError, OSError):
                answer = b""
            if answer == b"ok\n":
                return None
            process.kill()
            code = process.wait()
            self._process = None
            if answer is None:
                return f"pyslow5 did not finish opening it within {PROBE_TIMEOUT_S:g} s"
            how = signal.Signals(-code).name if code < 0 else f"exit status {code}"
            return f"pyslow5 crashes on it ({how}) although its header passed nst_hf's checks"


if __name__ == "__main__":
    _serve()
