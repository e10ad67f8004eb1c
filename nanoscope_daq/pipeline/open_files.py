"""HDF5 files whose writer died: still marked open for writing, so plain readers refuse them.

HDF5 marks a file open for (SWMR) writing in its superblock and clears the mark on a
clean close; a writer killed mid-file leaves it set, and every later open without SWMR
fails with "file is already open for write". The frames it flushed are readable with
SWMR, so a repair copies the file's objects (HDF5's own object copy) into a fresh file
and puts it in place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py

OPEN_MARK = "already open for write"
"""What HDF5 says when a file is still marked open by a writer."""


def is_marked_open(path: Path) -> bool:
    """Whether the HDF5 file at ``path`` is still marked open for writing (by a writer alive or dead)."""
    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        if OPEN_MARK in str(exc):
            return True
        raise
    return False


def clear_open_mark(path: Path) -> bool:
    """Rewrite ``path`` without the open mark a dead writer left; False if it had none.

    Every object and root attribute flushed by the writer is copied (read with SWMR)
    into ``<path>.repair`` (SWMR-capable, as the camera writes), which then replaces
    ``path`` with its permissions. Call it only once the writer is known to be dead.
    """
    path = Path(path)
    if not is_marked_open(path):
        return False
    repaired = path.with_name(path.name + ".repair")
    try:
        with h5py.File(path, "r", swmr=True) as source, h5py.File(repaired, "w", libver="latest") as target:
            for name in source:
                source.copy(source[name], target, name=name)
            for key, value in source.attrs.items():
                target.attrs[key] = value
        shutil.copymode(path, repaired)
        os.replace(repaired, path)
    finally:
        repaired.unlink(missing_ok=True)
    return True
