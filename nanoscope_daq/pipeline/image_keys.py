"""Which frames of a tomogram count: NXtomo image keys from what the instrument measured.

docs/documents.md: a projection is valid when the beam was on at its mid-exposure
(``source_current > 0``); where a grid angle was imaged more than once the last valid
frame counts. The same holds for flats (no beam, no flat); a dark taken with beam on is
no dark. A frame whose measured ``frame_type`` is not what its stream announced (a
"flat" with the sample still in the field) is invalid too, and so is a projection off
the planned grid. Invalid frames stay in the file with image key 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..documents import ImageKey
from .tomogram import Grid


@dataclass(frozen=True)
class FrameClassification:
    """Image key of each frame, how many frames were set invalid for which reason, and grid coverage."""

    image_key: np.ndarray
    invalid: dict[str, int]
    angles_covered: int
    """Planned grid angles with a valid projection."""


def classify_frames(
    nominal: np.ndarray,
    *,
    source_current: np.ndarray,
    rotation_angle: np.ndarray,
    grid: Grid,
    encoder_angle: np.ndarray | None = None,
    frame_type: np.ndarray | None = None,
) -> FrameClassification:
    """Image keys for frames taken as ``nominal`` keys, in acquisition order."""
    keys = np.asarray(nominal, dtype=np.int8).copy()
    beam_on = np.asarray(source_current, dtype=float) > 0
    wrong_beam = beam_on != (keys != ImageKey.DARK)
    wrong_type = np.zeros(len(keys), dtype=bool)
    if frame_type is not None:
        measured = np.asarray(frame_type, dtype=float)
        wrong_type = np.isfinite(measured) & (measured != keys) & ~wrong_beam
    keys[wrong_beam | wrong_type] = ImageKey.INVALID

    angle = np.asarray(rotation_angle, dtype=float)
    if encoder_angle is not None:
        angle = np.where(np.isfinite(encoder_angle), encoder_angle, angle)
    slot = grid.indices(angle)
    projection = keys == ImageKey.PROJECTION
    off_grid = projection & ((slot < 0) | (slot >= grid.count))
    keys[off_grid] = ImageKey.INVALID

    superseded = np.zeros(len(keys), dtype=bool)
    valid = np.flatnonzero(keys == ImageKey.PROJECTION)
    last_of_slot: dict[int, int] = {}
    for frame in valid:
        earlier = last_of_slot.get(int(slot[frame]))
        if earlier is not None:
            superseded[earlier] = True
        last_of_slot[int(slot[frame])] = frame
    keys[superseded] = ImageKey.INVALID

    invalid = {
        "beam_state": int(wrong_beam.sum()),
        "frame_type": int(wrong_type.sum()),
        "off_grid": int(off_grid.sum()),
        "retaken": int(superseded.sum()),
    }
    return FrameClassification(keys, invalid, len(last_of_slot))
