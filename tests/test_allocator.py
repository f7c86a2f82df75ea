"""Freed heap memory stays with a pipeline run: the next batch reuses it instead of faulting pages in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

# Encode through the library (which must leave the user's allocator alone), then run the pipeline entry point
# (which sets the thresholds unless opted out), then repeat an allocation pattern that glibc's defaults answer
# by trimming the heap every time: three 8 MiB arrays freed together leave 24 MiB free at the top, more than
# the dynamic trim threshold (2 x the largest freed mapping).
_SCRIPT = r"""
import json, os, resource, sys, tempfile
import numpy as np
import nst_hf
from nst_hf import _allocator
tok = nst_hf.load_tokenizer("default")
rng = np.random.default_rng(0)
codes = tok.encode_signals_to_codes([rng.normal(90, 10, 20000).astype(np.float32)])
by_library = _allocator._tuned_pid == os.getpid()
with tempfile.TemporaryDirectory() as tmp:
    nst_hf.tokenize_inputs([sys.argv[1]], os.path.join(tmp, "out.jsonl"), tokenizer=tok, progress=False)
def cycle():
    arrays = [np.ones(2 << 20, dtype=np.float32) for _ in range(3)]
    del arrays
for _ in range(3):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(json.dumps({"by_library": by_library, "tuned": _allocator._tuned_pid == os.getpid(),
                  "codes": int(codes[0].shape[0]),
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "sample.pod5"


def _run(keep_defaults: bool) -> dict:
    env = dict(os.environ, NST_HF_KEEP_MALLOC_DEFAULTS="1" if keep_defaults else "0")
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(SAMPLE)], env=env, capture_output=True, text=True, timeout=300,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc mallopt settings")
def test_a_pipeline_run_keeps_freed_memory_and_the_library_alone_does_not():
    tuned, default = _run(keep_defaults=False), _run(keep_defaults=True)
    assert not tuned["by_library"] and not default["by_library"]  # a user's own process is left as it was
    assert tuned["tuned"] and not default["tuned"]
    assert tuned["codes"] == default["codes"] == 4000
    # 10 cycles x 24 MiB: glibc's defaults give the pages back and fault them in again every cycle
    assert default["faults"] > 5000, default
    assert tuned["faults"] * 20 < default["faults"], (tuned, default)
