"""The camera file's layout (areaDetector NDFileHDF5 with the instrument's NDAttributes, DESIGN.md).

Where each data key of the frame streams lives in the file: what the capture device
announces, what the simulator writes and what the pipeline reads.
"""

from __future__ import annotations

from collections.abc import Iterator

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
"""Per-frame data keys: the NDAttribute dataset each is read from, and its units."""
IMAGE_DATASET = "/entry/data/data"
ATTRIBUTE_GROUP = "/entry/instrument/NDAttributes/"


def datasets() -> Iterator[tuple[str, str]]:
    """(data key, dataset path) of the pixels and of every per-frame value."""
    yield "image", IMAGE_DATASET
    for key, (attribute, _) in ATTRIBUTE_KEYS.items():
        yield key, ATTRIBUTE_GROUP + attribute
