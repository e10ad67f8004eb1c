"""The names docs/documents.md fixes, as the pipeline's callbacks rely on them."""

from __future__ import annotations

import enum


class DocumentContractError(ValueError):
    """Documents that break docs/documents.md; the message names the document, the problem and the fix."""


class ImageKey(enum.IntEnum):
    """NXtomo ``image_key`` of a frame."""

    PROJECTION = 0
    FLAT = 1
    DARK = 2
    INVALID = 3


FRAME_STREAMS: dict[str, ImageKey] = {
    "darks": ImageKey.DARK,
    "flats": ImageKey.FLAT,
    "projections": ImageKey.PROJECTION,
}
"""The streams announcing camera frames, and what their frames are meant to show."""

STREAM_OF_KEY: dict[ImageKey, str] = {key: stream for stream, key in FRAME_STREAMS.items()}

TOMOGRAMS_STREAM = "tomograms"

IMAGE_DATA_KEY = "image"
"""The external data key of the pixels (``/entry/data/data`` of the camera file)."""

REQUIRED_FRAME_DATA_KEYS = ("image", "rotation_angle", "frame_time", "source_current")
"""Per-frame data keys an NXtomo file cannot do without."""

FRAME_DATA_KEY_UNITS: dict[str, str] = {
    "rotation_angle": "deg",
    "encoder_angle": "deg",
    "frame_time": "s",
    "source_current": "mA",
    "force": "N",
    "respiratory_phase": "",
    "gate": "",
    "frame_type": "",
}
"""The per-frame (scalar) data keys of the frame streams and their units."""

HDF5_MIMETYPE = "application/x-hdf5"
