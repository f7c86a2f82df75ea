"""The one record type every reader yields, and a file-name helper the readers share."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nst_hf.errors import MissingCalibrationError


@dataclass(frozen=True, eq=False)
class SignalRecord:
    """One nanopore read: raw ADC samples plus the calibration that turns them into pA.

    ``signal_pa = (signal + offset) * range / digitisation`` (float32). ``offset``, ``range`` and
    ``digitisation`` are ``None`` when the file stores no calibration; ``signal_pa`` then raises
    :class:`~nst_hf.errors.MissingCalibrationError` while ``signal`` stays available.
    """

    read_id: str
    signal: npt.NDArray[np.int16]
    sampling_rate: float | None
    offset: float | None
    range: float | None
    digitisation: float | None
    source_file: str = ""
    channel: str | None = None
    start_sample: int | None = None
    end_reason: str | None = None
    run_id: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        """Number of raw samples."""
        return int(self.signal.shape[0])

    @property
    def has_calibration(self) -> bool:
        """True when offset, range and digitisation are all known."""
        return None not in (self.offset, self.range, self.digitisation)

    @property
    def scale(self) -> float:
        """pA per ADC step (``range / digitisation``)."""
        self._require_calibration()
        return float(self.range) / float(self.digitisation)

    @property
    def signal_pa(self) -> npt.NDArray[np.float32]:
        """Calibrated current in pA, float32, computed on each access."""
        self._require_calibration()
        return calibrate(self.signal, self.offset, self.range, self.digitisation)

    def _require_calibration(self) -> None:
        if not self.has_calibration:
            raise MissingCalibrationError(
                f"read {self.read_id!r} in {self.source_file or '<memory>'} has no calibration "
                "(offset/range/digitisation), so its pA signal is unavailable; use the raw "
                "`signal` or supply calibration from another copy of the read."
            )


def calibrate(signal: np.ndarray, offset: float, range_: float, digitisation: float) -> np.ndarray:
    """Raw ADC samples → pA: ``(signal + offset) * (range / digitisation)`` in float32."""
    scale = np.float32(float(range_) / float(digitisation))
    out = signal.astype(np.float32)
    out += np.float32(offset)
    out *= scale
    return out


@contextlib.contextmanager
def utf8_path(path: str) -> Iterator[str]:
    """``path`` itself, or a temporary symlink to it when its name is not valid UTF-8 (pod5 and pyslow5
    accept only UTF-8 file names)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        folder = tempfile.mkdtemp(prefix="nst_hf_name_")
        try:
            link = os.path.join(folder, "reads" + os.path.splitext(path)[1])
            os.symlink(os.path.abspath(path), link)
            yield link
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        yield path
