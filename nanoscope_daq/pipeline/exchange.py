"""The ``/exchange`` Data Exchange view of a tomogram, for dxchange and tomopy users.

``data``, ``data_white`` and ``data_dark`` are virtual datasets of the valid projections,
flats and darks (image keys 0, 1, 2) in acquisition order; ``theta`` holds the measured
angle of each projection in degrees.
"""

from __future__ import annotations

import h5py
import numpy as np

from ..documents import ImageKey
from .camera_file import CameraFrames
from .virtual_frames import link_frames


def write_exchange(h5: h5py.File, frames: CameraFrames, image_key: np.ndarray, rotation_angle: np.ndarray) -> None:
    """Add ``/exchange`` to ``h5`` for ``frames`` keyed by ``image_key``."""
    h5["implements"] = "exchange"
    exchange = h5.create_group("exchange")
    exchange.attrs["description"] = "Data Exchange view: virtual datasets of the valid frames of /entry"
    for name, key in (("data", ImageKey.PROJECTION), ("data_white", ImageKey.FLAT), ("data_dark", ImageKey.DARK)):
        dset = link_frames(exchange, name, frames, np.flatnonzero(image_key == key))
        dset.attrs["axes"] = "theta:y:x" if key == ImageKey.PROJECTION else "z:y:x"
        dset.attrs["units"] = "counts"
    theta = exchange.create_dataset("theta", data=rotation_angle[image_key == ImageKey.PROJECTION])
    theta.attrs["units"] = "degrees"
