"""Virtual datasets that show camera frames without copying a pixel.

The source file is named relative to the file holding the virtual dataset, and HDF5
resolves such a name from that file's directory: a directory holding both can move.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .camera_file import CameraFrames
from .frame_ranges import contiguous_runs


def link_frames(group: h5py.Group, name: str, frames: CameraFrames, positions: np.ndarray) -> h5py.Dataset:
    """``group[name]``: the frames at ``positions`` of ``frames`` (in that order), as a virtual dataset."""
    indices = frames.indices[np.asarray(positions, dtype=np.int64)]
    _, rows, cols = frames.file_shape
    if len(indices) == 0:
        return group.create_dataset(name, shape=(0, rows, cols), dtype=frames.dtype)
    layout = h5py.VirtualLayout(shape=(len(indices), rows, cols), dtype=frames.dtype)
    source = h5py.VirtualSource(
        _relative_name(frames.path, Path(group.file.filename)), frames.image_dataset, shape=frames.file_shape
    )
    for position, first, length in contiguous_runs(indices):
        layout[position : position + length] = source[first : first + length]
    return group.create_virtual_dataset(name, layout)


def _relative_name(source: Path, holder: Path) -> str:
    return os.path.relpath(source.resolve(), holder.resolve().parent)
