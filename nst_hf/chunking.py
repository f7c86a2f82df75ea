"""Cut reads into overlapping windows for a conv encoder, and stitch the frames back (pure functions).

All positions are in frames (``d`` samples each). A read of ``L`` samples has ``T = ceil(L / d)``
frames; it is followed by zeros up to ``E = T + margin`` frames, exactly as if the whole read (plus
trailing zeros, as the earlier tool pads) went through the encoder in one pass. Every window of a
read longer than one window has the same length ``core + 2 * margin`` frames, so windows of many
reads stack into one batch; each frame is kept from the window where it has at least ``margin``
frames of context on both sides (or touches the read's start), which makes the result independent of
``core`` and of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Input frames ``[start, end)`` of the padded read; output frames ``[keep_start, keep_end)`` are kept."""

    start: int
    end: int
    keep_start: int
    keep_end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def num_frames(num_samples: int, downsample_rate: int) -> int:
    """Frames (tokens per level) of a read: ``ceil(num_samples / downsample_rate)``."""
    if num_samples < 0 or downsample_rate < 1:
        raise ValueError(f"num_samples must be >= 0 and downsample_rate >= 1, got {num_samples}, {downsample_rate}")
    return math.ceil(num_samples / downsample_rate)


def min_margin(receptive_field: int, downsample_rate: int) -> int:
    """Smallest safe margin in frames: more than half the receptive field on each side."""
    if receptive_field < 1 or downsample_rate < 1:
        raise ValueError(f"receptive_field and downsample_rate must be >= 1, got {receptive_field}, {downsample_rate}")
    return math.ceil(receptive_field / downsample_rate) + 1


def plan_windows(frames: int, core: int, margin: int) -> list[Window]:
    """Windows covering ``frames`` output frames of a read padded to ``frames + margin`` frames."""
    if core < 1 or margin < 0 or frames < 0:
        raise ValueError(f"frames must be >= 0, core >= 1 and margin >= 0, got frames={frames}, core={core}, "
                         f"margin={margin}")
    if frames == 0:
        return []
    padded = frames + margin
    width = core + 2 * margin
    if padded <= width:
        return [Window(0, padded, 0, frames)]
    windows = []
    for first in range(0, frames, core):
        last = min(first + core, frames)
        start = min(max(0, first - margin), padded - width)
        windows.append(Window(start, start + width, first, last))
    return windows
