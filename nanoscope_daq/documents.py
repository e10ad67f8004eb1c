"""The document and file contract every layer shares (docs/documents.md, DESIGN.md).

One place for the names the plans emit, the devices announce, the simulator writes
and the pipeline reads: the frame streams and what their frames show, the per-frame
data keys with their units and where each lives in the camera file, and the keys of
the ``tomograms`` stream. Plans, the capture device, the simulator's document helper
and every pipeline callback import them from here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator


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

# -- per-frame data keys and the camera file (areaDetector NDFileHDF5 with the instrument's NDAttributes) --

IMAGE_DATA_KEY = "image"
"""The external data key of the pixels (``/entry/data/data`` of the camera file)."""

ATTRIBUTE_KEYS: dict[str, tuple[str, str]] = {
    "rotation_angle": ("RotationAngle", "deg"),
    "encoder_angle": ("EncoderAngle", "deg"),
    "frame_time": ("NDArrayTimeStamp", "s"),
    "source_current": ("SourceCurrent", "mA"),
    "force": ("Force", "N"),
    "respiratory_phase": ("RespiratoryPhase", ""),
    "gate": ("Gate", ""),
    "frame_type": ("FrameType", ""),
}
"""Per-frame (scalar) data keys: the NDAttribute dataset each is read from, and its units."""

FRAME_DATA_KEY_UNITS: dict[str, str] = {key: units for key, (_, units) in ATTRIBUTE_KEYS.items()}
"""The per-frame (scalar) data keys of the frame streams and their units."""

REQUIRED_FRAME_DATA_KEYS = (IMAGE_DATA_KEY, "rotation_angle", "frame_time", "source_current")
"""Per-frame data keys an NXtomo file cannot do without."""

IMAGE_DATASET = "/entry/data/data"
ATTRIBUTE_GROUP = "/entry/instrument/NDAttributes/"
HDF5_MIMETYPE = "application/x-hdf5"


def datasets() -> Iterator[tuple[str, str]]:
    """(data key, dataset path) of the pixels and of every per-frame value."""
    yield IMAGE_DATA_KEY, IMAGE_DATASET
    for key, (attribute, _) in ATTRIBUTE_KEYS.items():
        yield key, ATTRIBUTE_GROUP + attribute


# -- the tomograms stream: one event per tomogram -------------------------------------------------

TOMOGRAMS_STREAM = "tomograms"

TOMOGRAM_KEYS: dict[str, object] = {
    "tomogram": 0, "time_point": 0, "file": "", "projections_start": -1, "projections_stop": -1,
    "darks_start": -1, "darks_stop": -1, "flats_before_start": -1, "flats_before_stop": -1,
    "flats_after_start": -1, "flats_after_stop": -1, "grid_start_deg": 0.0, "grid_step_deg": 0.0, "grid_count": 0,
    "start_time": 0.0, "end_time": 0.0, "force_n": float("nan"),
}
"""The ``tomograms`` stream's keys and their types, by example (frame ranges index the camera file)."""
