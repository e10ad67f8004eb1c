"""Darks and flats of a running scan, as flat fields numbered by where they lie in the camera file.

Online, a projection is normalised by the darks and flats taken last before it, in
acquisition order (camera-file index), not in the order they were announced: a run
may announce its closing flats before its last projections. Until flats were taken
before a projection, the nearest flats after it serve. Each block of consecutive flat
frames is one flat field, named by its first frame; a projection remembers the one it
was normalised with, so that when the sliding window later takes it out again it is
normalised exactly as when it went in.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

from ..recon import FlatField, build_flat_field
from .frame_ranges import FrameRange


class _Block:
    """Consecutive frames of one calibration stream."""

    def __init__(self, frames: FrameRange, pixels: np.ndarray) -> None:
        self.start, self.stop = frames.start, frames.stop
        self.pixels = list(pixels)

    def extend(self, frames: FrameRange, pixels: np.ndarray) -> bool:
        if frames.start != self.stop:
            return False
        self.stop = frames.stop
        self.pixels.extend(pixels)
        return True


class FlatFieldsByIndex:
    """Dark and flat blocks of one camera file; ``for_frame`` names the flat field that normalises a frame."""

    def __init__(self, zinger_threshold: float, device: torch.device | str) -> None:
        self.zinger_threshold = zinger_threshold
        self.device = device
        self._blocks: dict[str, list[_Block]] = {"darks": [], "flats": []}
        self._fields: dict[int, FlatField] = {}

    def add(self, stream: str, frames: FrameRange, pixels: np.ndarray) -> None:
        """Frames of the ``darks`` or ``flats`` stream (``pixels``: those to use; may be fewer than ``frames``)."""
        blocks = self._blocks[stream]
        block = next((b for b in blocks if b.extend(frames, pixels)), None)
        if block is None:
            blocks.append(_Block(frames, pixels))
            blocks.sort(key=lambda b: b.start)
        self._fields.clear()  # rebuilt on demand from the blocks as they are now

    @property
    def empty(self) -> bool:
        return not any(b.pixels for b in self._blocks["flats"])

    def for_frame(self, index: int) -> int:
        """The first frame of the flats block that normalises camera frame ``index``: the last before, else the first
        after it."""
        flats = [b for b in self._blocks["flats"] if b.pixels]
        starts = [b.start for b in flats]
        before = bisect.bisect_right(starts, index) - 1
        return flats[max(before, 0)].start

    def get(self, flats_start: int) -> FlatField:
        """The flat field of the flats block starting at ``flats_start``, with the darks taken last before it."""
        if flats_start not in self._fields:
            flats = next(b for b in self._blocks["flats"] if b.start == flats_start)
            darks = [b for b in self._blocks["darks"] if b.pixels and b.start < flats_start] or \
                [b for b in self._blocks["darks"] if b.pixels]
            dark_pixels = np.stack(darks[-1].pixels) if darks else None
            self._fields[flats_start] = build_flat_field(dark_pixels, np.stack(flats.pixels),
                                                         zinger_threshold=self.zinger_threshold, device=self.device)
        return self._fields[flats_start]
