"""Reads frames (pixels and per-frame values) from a camera file while the camera is still writing it.

The camera file is opened in SWMR read mode once and its datasets refreshed before each
read, so frames announced by a ``stream_datum`` are read moments after they were
written (docs/documents.md: a frame is announced only once the file holds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import h5py
import numpy as np

from ..documents import FRAME_DATA_KEY_UNITS, IMAGE_DATA_KEY, DocumentContractError
from .announcements import CameraFile


@dataclass(frozen=True)
class FrameBlock:
    """Some frames of a camera file: float32 pixels (n, rows, cols) and one float64 array per per-frame value."""

    indices: np.ndarray
    pixels: np.ndarray
    values: dict[str, np.ndarray]

    def value(self, data_key: str, default: float = np.nan) -> np.ndarray:
        """The per-frame ``data_key``, or ``default`` for every frame when the run did not record it."""
        found = self.values.get(data_key)
        return np.full(len(self.indices), default) if found is None else found


def bin_pixels(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` pixel blocks (rows and columns cropped to a multiple of ``factor``)."""
    if factor == 1:
        return pixels
    n, rows, cols = pixels.shape
    r, c = rows // factor * factor, cols // factor * factor
    blocks = pixels[:, :r, :c].reshape(n, r // factor, factor, c // factor, factor)
    return blocks.mean(axis=(2, 4), dtype=np.float32)


class CameraReader:
    """Frames of one camera file, read by camera-file index, optionally binned."""

    def __init__(self, camera: CameraFile, binning: int = 1) -> None:
        self.camera = camera
        self.binning = binning
        try:
            self._h5 = h5py.File(camera.path, "r", swmr=True)
        except OSError as exc:
            raise OSError(f"cannot open camera file {camera.path} for reading: {exc}") from None

    def _dataset(self, data_key: str) -> h5py.Dataset:
        name = self.camera.dataset(data_key)
        dataset = self._h5.get(name)
        if not isinstance(dataset, h5py.Dataset):
            raise DocumentContractError(f"data key {data_key!r} was announced in dataset {name!r} of "
                                        f"{self.camera.path}, which has no such dataset")
        dataset.refresh()
        return dataset

    def read(self, indices: np.ndarray) -> FrameBlock:
        """Pixels and per-frame values of the frames at ``indices`` (any order, repeats allowed)."""
        indices = np.asarray(indices, dtype=np.int64)
        wanted = np.unique(indices)
        image = self._dataset(IMAGE_DATA_KEY)
        if image.shape[0] <= wanted[-1]:
            raise DocumentContractError(f"{self.camera.path} holds {image.shape[0]} frames but frame {wanted[-1]} was "
                                        "announced; a frame is announced only once the camera file holds it")
        runs = np.split(wanted, np.flatnonzero(np.diff(wanted) > 1) + 1)
        rows = np.searchsorted(wanted, indices)
        pixels = np.concatenate([image[run[0]:run[-1] + 1] for run in runs]).astype(np.float32)[rows]
        values = {}
        for key in FRAME_DATA_KEY_UNITS:
            if key in self.camera.datasets:
                dataset = self._dataset(key)
                values[key] = np.concatenate([dataset[run[0]:run[-1] + 1] for run in runs]).astype(np.float64)[rows]
        return FrameBlock(indices, bin_pixels(pixels, self.binning), values)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> CameraReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
