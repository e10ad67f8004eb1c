"""The reconstructed volume file: ``/volume`` (float32, z-y-x, 1/mm) with its voxel size and provenance.

Written slab by slab, so that a volume larger than memory can be written.
``/provenance`` holds how the volume was made: input file, algorithm, filter, centre
of rotation (and how it was found), the angles used, preprocessing, versions, time.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import scipy
import torch

from .. import __version__


def software_versions() -> dict[str, str]:
    return {"nanoscope_daq": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "h5py": h5py.__version__, "python": platform.python_version()}


class VolumeWriter:
    """Creates the volume file and writes z slabs into it; ``provenance`` closes it with how it was made.

    ``compress``: gzip level 1, shuffled (about half the size), or none (the online
    pipeline, where writing fast matters more than the file's size).
    """

    def __init__(self, path: str | Path, shape: tuple[int, int, int], voxel_size_um: float,
                 compress: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._h5 = h5py.File(self.path, "w")
        nz, ny, nx = shape
        packing = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if compress else {}
        self.volume = self._h5.create_dataset("volume", shape, np.float32, chunks=(1, min(ny, 256), min(nx, 256)),
                                              **packing)
        for target in (self.volume, self._h5):
            target.attrs["voxel_size_um"] = voxel_size_um
        self.volume.attrs["units"] = "1/mm"
        self.volume.attrs["quantity"] = "linear attenuation coefficient"
        self.volume.attrs["axes"] = ("z-y-x, specimen frame at rotation angle 0; voxel (k, j, i) centred at "
                                     "((i + 0.5 - nx/2) v, (j + 0.5 - ny/2) v, (k + 0.5 - nz/2) v), z up the "
                                     "rotation axis (docs/recon.md)")

    def write(self, z0: int, slab: np.ndarray | torch.Tensor) -> None:
        if isinstance(slab, torch.Tensor):
            slab = slab.detach().cpu().numpy()
        self.volume[z0:z0 + slab.shape[0]] = slab.astype(np.float32, copy=False)

    def provenance(self, record: dict[str, Any], angles_deg: np.ndarray) -> None:
        group = self._h5.create_group("provenance")
        group.attrs["created"] = datetime.now(timezone.utc).astimezone().isoformat()
        group.attrs["software"] = json.dumps(software_versions())
        for key, value in record.items():
            group.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
        group.create_dataset("angles_deg", data=np.asarray(angles_deg, dtype=np.float64))
        group["angles_deg"].attrs["doc"] = "rotation angle of each projection used (measured, degrees)"

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> VolumeWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        if exc is not None:
            self.path.unlink(missing_ok=True)  # no half-written volume left behind
