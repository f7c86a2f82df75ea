"""Keep freed heap memory in the process instead of giving it back to the OS after every batch.

glibc's ``malloc`` returns large freed blocks to the kernel (``munmap`` / heap trimming), so the next
batch's tensors of the same size fault every page in again, zeroed by the kernel. Fixing both thresholds
keeps blocks up to :data:`MMAP_THRESHOLD` on the heap and stops trimming until :data:`TRIM_THRESHOLD`
bytes lie free at its top; peak memory is unchanged, memory freed after the peak stays with the process
for its next batch (the README gives the measured effect).

Applied once per process, on glibc only, by the entry points that own their process: the ``nst-hf``
command, :func:`nst_hf.pipeline.tokenize_inputs` and the benchmarks. A tokenizer used as a library
leaves a user's allocator alone. ``NST_HF_KEEP_MALLOC_DEFAULTS=1`` leaves it alone everywhere.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

logger = logging.getLogger(__name__)

#: glibc ``mallopt`` parameters (``<malloc.h>``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Largest block served from the heap rather than its own mapping (glibc's maximum on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free bytes at the heap's top before glibc gives memory back to the OS.
TRIM_THRESHOLD = 512 << 20

_tuned_pid: int | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; return whether they are set.

    Does nothing (returns ``False``) off glibc, when ``NST_HF_KEEP_MALLOC_DEFAULTS=1``, or if
    ``mallopt`` refuses a value.
    """
    global _tuned_pid
    if _tuned_pid == os.getpid():
        return True
    if os.environ.get("NST_HF_KEEP_MALLOC_DEFAULTS", "") not in ("", "0") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # the mmap threshold first: setting either one also turns off glibc's dynamic adjustment of both
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        logger.debug("mallopt refused the thresholds; the allocator keeps its defaults")
        return False
    _tuned_pid = os.getpid()
    logger.debug("glibc malloc: mmap threshold %d MiB, trim threshold %d MiB", MMAP_THRESHOLD >> 20,
                 TRIM_THRESHOLD >> 20)
    return True
