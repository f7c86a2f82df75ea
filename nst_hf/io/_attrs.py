"""Defensive decoding of attribute values that writers store as bytes, str or numbers."""

from __future__ import annotations

import numpy as np


def as_str(value) -> str | None:
    """Decode bytes / numpy bytes / str / numbers to ``str``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return as_str(value[()])
    return str(value)


def as_float(value) -> float | None:
    """Decode a numeric attribute (possibly stored as bytes/str) to ``float``."""
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_, str)):
        text = as_str(value).strip()
        if text in ("", "."):
            return None
        return float(text)
    return float(value)


def as_int(value) -> int | None:
    """Decode an integer attribute to ``int``."""
    number = as_float(value)
    return None if number is None else int(number)
