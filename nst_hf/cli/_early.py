"""What a run command begins before its heavy imports."""

from __future__ import annotations

import logging


def begin_readers(inputs, resume: bool, workers: int) -> None:
    """Begin the readers' start-up (:func:`nst_hf.io.prepare_readers`: the SLOW5 probe helper, the h5py and
    pod5 imports) before the command imports torch, transformers and SciPy (seconds on a cold start), so that
    it is done by the first read; the run makes the same call and finds it under way.

    It does what the run would do on its own (a fresh run in one process), and no more: a resumed run may not
    read the first SLOW5 file at all. Nothing is reported here: the run finds the same files and reports any
    problem with them itself.
    """
    if resume or workers > 1:
        return
    from nst_hf.io import find_signal_files, prepare_readers

    io_logger = logging.getLogger("nst_hf.io")
    disabled, io_logger.disabled = io_logger.disabled, True  # its warnings come again, once, from the run
    try:
        prepare_readers(find_signal_files(inputs))
    except Exception:  # noqa: BLE001 - a missing or unsupported input: the run raises it with its message
        pass
    finally:
        io_logger.disabled = disabled
