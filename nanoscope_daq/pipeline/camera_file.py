"""Reads what a tomogram needs from a camera file: the frames' shape and per-frame values.

Pixels are never read here; the NXtomo file points at them with virtual datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..documents import FRAME_DATA_KEY_UNITS, IMAGE_DATA_KEY, REQUIRED_FRAME_DATA_KEYS, DocumentContractError
from .announcements import CameraFile


@dataclass(frozen=True)
class CameraFrames:
    """Some frames of a camera file: where their pixels are, and their per-frame values."""

    path: Path
    image_dataset: str
    file_shape: tuple[int, int, int]
    """Shape of the whole image dataset: frames x rows x cols."""
    dtype: np.dtype
    indices: np.ndarray
    """Camera-file index of each frame, in the order of ``values``."""
    values: dict[str, np.ndarray]
    """One float64 array per per-frame data key the run announced (rotation_angle, ...)."""

    def value(self, data_key: str) -> np.ndarray | None:
        return self.values.get(data_key)


def read_camera_frames(camera: CameraFile, indices: np.ndarray) -> CameraFrames:
    """Per-frame values of ``indices`` from ``camera``; the file must hold every one of them."""
    for key in REQUIRED_FRAME_DATA_KEYS:
        camera.dataset(key)
    try:
        h5 = h5py.File(camera.path, "r", swmr=True)
    except OSError as exc:
        raise OSError(f"cannot open camera file {camera.path}: {exc}") from None
    with h5:
        needed = int(indices.max()) + 1 if len(indices) else 0
        image = _dataset(h5, camera, IMAGE_DATA_KEY)
        if image.ndim != 3 or image.shape[0] < needed:
            raise DocumentContractError(
                f"{camera.path}:{image.name} has shape {image.shape} but frames up to index {needed - 1} were "
                "announced; a frame is announced only once the camera file holds it"
            )
        values = {}
        for key in FRAME_DATA_KEY_UNITS:
            if key not in camera.datasets:
                continue
            dset = _dataset(h5, camera, key)
            if dset.shape[0] < needed:
                raise DocumentContractError(
                    f"{camera.path}:{dset.name} ({key}) holds {dset.shape[0]} values but frames up to index "
                    f"{needed - 1} were announced"
                )
            values[key] = np.asarray(dset[()], dtype=np.float64)[indices]
        return CameraFrames(
            path=camera.path,
            image_dataset=image.name,
            file_shape=tuple(image.shape),
            dtype=image.dtype,
            indices=np.asarray(indices, dtype=np.int64),
            values=values,
        )


def _dataset(h5: h5py.File, camera: CameraFile, data_key: str) -> h5py.Dataset:
    name = camera.dataset(data_key)
    dset = h5.get(name)
    if not isinstance(dset, h5py.Dataset):
        raise DocumentContractError(
            f"data key {data_key!r} was announced in dataset {name!r} of {camera.path}, which has no such dataset"
        )
    dset.refresh()
    return dset
