"""All exceptions raised by nst_hf.

Each one also subclasses the matching builtin, so ``except ValueError`` and friends keep working.
"""

from __future__ import annotations


class NstHfError(Exception):
    """Base class of every nst_hf error."""


class UnsupportedFormatError(NstHfError, ValueError):
    """A path is not a signal file nst_hf can read (unknown extension, unsupported version)."""


class CorruptFileError(NstHfError, OSError):
    """A signal file exists but cannot be opened or parsed (truncated, damaged, wrong content)."""


class InvalidReadError(NstHfError, ValueError):
    """One read inside a file is unusable (empty signal, zero digitisation, non-finite values)."""

    def __init__(self, message: str, *, path: str | None = None, read_id: str | None = None):
        super().__init__(message)
        self.path = path
        self.read_id = read_id


class MissingCalibrationError(NstHfError, ValueError):
    """A read has no calibration, so its current in pA cannot be computed."""


class InvalidSignalError(NstHfError, ValueError):
    """A signal array cannot be processed (wrong shape, non-finite values, constant signal)."""


class MissingDependencyError(NstHfError, ImportError):
    """An optional package needed for this operation is not installed."""


class CheckpointError(NstHfError, ValueError):
    """A tokenizer checkpoint is missing, of the wrong kind or damaged.

    Subclasses ``ValueError`` (not ``OSError``) because transformers rewrites any ``OSError`` raised
    while loading a tokenizer into a generic message, hiding ours.
    """


class ConstantSignalError(InvalidSignalError):
    """The signal is constant (median absolute deviation 0), so it cannot be normalised."""
