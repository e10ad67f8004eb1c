"""Ranges of camera-file frame indices, and the set of frames announced so far."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, order=True)
class FrameRange:
    """Frames ``[start, stop)`` of a camera file."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.stop:
            raise ValueError(f"frame range [{self.start}, {self.stop}) must satisfy 0 <= start <= stop")

    def __len__(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"[{self.start}, {self.stop})"

    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.stop, dtype=np.int64)


class FrameSet:
    """Frame indices as sorted, disjoint, non-adjacent ranges (adjacent announcements merge)."""

    def __init__(self) -> None:
        self._ranges: list[FrameRange] = []

    def add(self, frames: FrameRange) -> None:
        if not len(frames):
            return
        start, stop = frames.start, frames.stop
        lo = bisect.bisect_left([r.stop for r in self._ranges], start)
        hi = bisect.bisect_right([r.start for r in self._ranges], stop)
        if lo < hi:
            start = min(start, self._ranges[lo].start)
            stop = max(stop, self._ranges[hi - 1].stop)
        self._ranges[lo:hi] = [FrameRange(start, stop)]

    def covers(self, frames: FrameRange) -> bool:
        """Whether every frame of ``frames`` is in the set."""
        if not len(frames):
            return True
        return any(r.start <= frames.start and frames.stop <= r.stop for r in self._ranges)

    def blocks(self) -> tuple[FrameRange, ...]:
        """The set as contiguous blocks, in index order."""
        return tuple(self._ranges)

    def __iter__(self) -> Iterator[FrameRange]:
        return iter(self._ranges)

    def __str__(self) -> str:
        return ", ".join(map(str, self._ranges)) or "none"


def contiguous_runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """``(position, first index, length)`` of each run of consecutive indices, in order."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [len(indices)])))
    return [(int(p), int(indices[p]), int(n)) for p, n in zip(starts, lengths)]
