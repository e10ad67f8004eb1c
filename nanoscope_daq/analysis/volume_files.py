"""Read and write the volume and labels HDF5 files of DESIGN.md (``/volume``, ``/labels``, ``voxel_size_um``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np


@dataclass
class Volume:
    """A z-y-x array with its voxel size (um) and the provenance of how it was made."""

    data: np.ndarray
    voxel_size_um: float
    provenance: dict[str, Any] = field(default_factory=dict)


def _open(path: str | Path, names: tuple[str, ...], what: str) -> tuple[h5py.File, str]:
    """The open file and the first of ``names`` it holds; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist; pass the path of an existing HDF5 file")
    h5 = h5py.File(path, "r")
    for name in names:
        if name in h5:
            return h5, name
    h5.close()
    raise ValueError(f"{path} has no /{names[0]} dataset: it is not a {what} file (DESIGN.md: /{names[0]}, "
                     f"z-y-x, attribute voxel_size_um)")


def _voxel_size(h5: h5py.File, dataset: str, path: str | Path) -> float:
    for owner in (h5[dataset], h5):
        if "voxel_size_um" in owner.attrs:
            return float(owner.attrs["voxel_size_um"])
    raise ValueError(f"{path}: /{dataset} carries no voxel_size_um attribute; add it (micrometres per voxel)")


def _provenance(h5: h5py.File, dataset: str) -> dict[str, Any]:
    text = h5[dataset].attrs.get("provenance", "{}")
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return {"text": str(text)}


def read_volume(path: str | Path) -> Volume:
    """``/volume`` of a reconstructed volume file (or a simulator ground_truth.h5's ``/attenuation``)."""
    h5, name = _open(path, ("volume", "attenuation"), "volume")
    with h5:
        return Volume(h5[name][...].astype(np.float32), _voxel_size(h5, name, path), _provenance(h5, name))


def read_labels(path: str | Path) -> Volume:
    """``/labels`` (uint8) of a labels file or a simulator ground_truth.h5."""
    h5, name = _open(path, ("labels",), "labels")
    with h5:
        return Volume(h5[name][...].astype(np.uint8), _voxel_size(h5, name, path), _provenance(h5, name))


def _write(path: str | Path, name: str, volume: Volume, dtype: type, extra: dict[str, np.ndarray] | None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise ValueError(f"/{name} must be a 3-D z-y-x array, got shape {data.shape}")
    with h5py.File(path, "w") as h5:
        chunks = (1, min(data.shape[1], 256), min(data.shape[2], 256))
        ds = h5.create_dataset(name, data=data.astype(dtype), chunks=chunks, compression="gzip",
                               compression_opts=1)
        ds.attrs["voxel_size_um"] = float(volume.voxel_size_um)
        ds.attrs["axes"] = "z-y-x"
        ds.attrs["provenance"] = json.dumps(volume.provenance, default=str)
        h5.attrs["voxel_size_um"] = float(volume.voxel_size_um)
        for key, value in (extra or {}).items():
            h5.create_dataset(key, data=value, compression="gzip", compression_opts=1)


def write_volume(path: str | Path, volume: Volume) -> None:
    """Write ``/volume`` (float32, z-y-x) with ``voxel_size_um`` and provenance."""
    _write(path, "volume", volume, np.float32, None)


def write_labels(path: str | Path, labels: Volume, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write ``/labels`` (uint8, z-y-x) with ``voxel_size_um``, provenance and optional extra datasets."""
    _write(path, "labels", labels, np.uint8, extra)
