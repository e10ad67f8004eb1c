"""The volume and labels files of DESIGN.md: the one reader and writer every layer uses.

A reconstructed volume file holds ``/volume`` (float32, z-y-x, 1/mm), a labels file
``/labels`` (uint8, z-y-x); both carry ``voxel_size_um`` (on the dataset and the file)
and a ``/provenance`` group saying how they were made: one attribute per entry (text
and numbers as they are; dicts, lists and tuples as JSON text, which always begins
with ``{`` or ``[``), arrays such as ``angles_deg`` as datasets of the group, plus
``created`` (ISO time) and ``software`` (versions, JSON). ``nanoscope recon``, the
online pipeline and ``nanoscope segment`` all write it through this module, and
:func:`read_volume` / :func:`read_labels` give it back as a dict.

Volumes are written slab by slab (:class:`VolumeWriter`), so that a volume larger than
memory can be written.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import scipy

from . import __version__
from .errors import RefusedInput

if TYPE_CHECKING:
    import torch

PROVENANCE_GROUP = "provenance"
ANGLES_DOC = "rotation angle of each projection used (measured, degrees)"
VOLUME_AXES = ("z-y-x, specimen frame at rotation angle 0; voxel (k, j, i) centred at "
               "((i + 0.5 - nx/2) v, (j + 0.5 - ny/2) v, (k + 0.5 - nz/2) v), z up the "
               "rotation axis (docs/recon.md)")


@dataclass
class Volume:
    """A z-y-x array with its voxel size (um) and the provenance of how it was made."""

    data: np.ndarray
    voxel_size_um: float
    provenance: dict[str, Any] = field(default_factory=dict)


def software_versions() -> dict[str, str]:
    """Versions of the package and of the libraries that computed the file."""
    return {"nanoscope_daq": __version__, "torch": metadata.version("torch"), "numpy": np.__version__,
            "scipy": scipy.__version__, "h5py": h5py.__version__, "python": platform.python_version()}


def _json_default(value: Any) -> Any:
    """JSON for what ``json`` does not know: arrays as lists, numpy scalars as numbers, the rest as text."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_provenance(h5: h5py.File, record: Mapping[str, Any]) -> None:
    """The ``/provenance`` group of ``record`` (see the module docstring for the encoding)."""
    group = h5.create_group(PROVENANCE_GROUP)
    group.attrs["created"] = datetime.now(UTC).astimezone().isoformat()
    group.attrs["software"] = json.dumps(software_versions())
    for key, value in record.items():
        if isinstance(value, np.ndarray):
            group.create_dataset(key, data=value)
        elif isinstance(value, (dict, list, tuple)):
            group.attrs[key] = json.dumps(value, default=_json_default)
        else:
            group.attrs[key] = value


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return json.loads(value) if value[:1] in ("{", "[") else value
    return value.item() if isinstance(value, np.generic) else value


def read_provenance(h5: h5py.File) -> dict[str, Any]:
    """The ``/provenance`` group as a dict (empty when the file has none)."""
    group = h5.get(PROVENANCE_GROUP)
    if not isinstance(group, h5py.Group):
        return {}
    record = {key: _decoded(value) for key, value in group.attrs.items()}
    record.update({key: group[key][()] for key in group})
    return record


def _create(h5: h5py.File, name: str, shape: tuple[int, ...], dtype: type, voxel_size_um: float,
            compress: bool) -> h5py.Dataset:
    if len(shape) != 3:
        raise ValueError(f"/{name} must be a 3-D z-y-x array, got shape {shape}")
    _, ny, nx = shape
    packing = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if compress else {}
    dataset = h5.create_dataset(name, shape, dtype, chunks=(1, min(ny, 256), min(nx, 256)), **packing)
    for target in (dataset, h5):
        target.attrs["voxel_size_um"] = float(voxel_size_um)
    return dataset


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
        self.volume = _create(self._h5, "volume", shape, np.float32, voxel_size_um, compress)
        self.volume.attrs["units"] = "1/mm"
        self.volume.attrs["quantity"] = "linear attenuation coefficient"
        self.volume.attrs["axes"] = VOLUME_AXES

    def write(self, z0: int, slab: np.ndarray | torch.Tensor) -> None:
        """Slices ``z0`` .. ``z0 + len(slab)`` of the volume."""
        if not isinstance(slab, np.ndarray):  # a tensor (torch is imported by whoever made one)
            slab = slab.detach().cpu().numpy()
        self.volume[z0:z0 + slab.shape[0]] = slab.astype(np.float32, copy=False)

    def provenance(self, record: Mapping[str, Any], angles_deg: np.ndarray | None = None) -> None:
        """Record how the volume was made, with the angle of each projection used when it came from projections."""
        if angles_deg is not None:
            record = {**record, "angles_deg": np.asarray(angles_deg, dtype=np.float64)}
        write_provenance(self._h5, record)
        if angles_deg is not None:
            self._h5[PROVENANCE_GROUP]["angles_deg"].attrs["doc"] = ANGLES_DOC

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> VolumeWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        if exc is not None:
            self.path.unlink(missing_ok=True)  # no half-written volume left behind


def write_volume(path: str | Path, volume: Volume) -> None:
    """Write ``/volume`` (float32, z-y-x) with ``voxel_size_um`` and provenance, in one go."""
    data = np.asarray(volume.data)
    with VolumeWriter(path, data.shape, volume.voxel_size_um) as writer:
        writer.write(0, data)
        writer.provenance(volume.provenance)


def write_labels(path: str | Path, labels: Volume, extra: Mapping[str, np.ndarray] | None = None) -> None:
    """Write ``/labels`` (uint8, z-y-x) with ``voxel_size_um``, provenance and optional extra datasets."""
    data = checked_labels(np.asarray(labels.data), str(path))
    write_labels_slabs(path, data.shape, labels.voxel_size_um, labels.provenance, [(0, data)], extra)


def write_labels_slabs(path: str | Path, shape: tuple[int, int, int], voxel_size_um: float,
                       provenance: Mapping[str, Any], slabs: Iterable[tuple[int, np.ndarray]],
                       extra: Mapping[str, np.ndarray] | None = None) -> None:
    """Write ``/labels`` of ``shape`` slab by slab (``(z0, slab)`` pairs, never the whole volume at once), with
    ``voxel_size_um``, ``provenance`` and optional extra datasets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        dataset = _create(h5, "labels", shape, np.uint8, voxel_size_um, compress=True)
        for z0, slab in slabs:
            dataset[z0:z0 + slab.shape[0]] = checked_labels(np.asarray(slab), str(path))
        dataset.attrs["axes"] = "z-y-x"
        write_provenance(h5, provenance)
        for key, value in (extra or {}).items():
            h5.create_dataset(key, data=value, compression="gzip", compression_opts=1)


def checked_labels(data: np.ndarray, where: str) -> np.ndarray:
    """``data`` as uint8 label codes, refused when it is not 3-D integer codes 0..255 (never cast silently)."""
    if data.ndim != 3:
        raise RefusedInput(f"{where}: labels of shape {data.shape} are not a z-y-x volume; give a 3-D array")
    if not (np.issubdtype(data.dtype, np.integer) or data.dtype == bool):
        raise RefusedInput(f"{where}: labels of type {data.dtype} are not label codes; give integer codes "
                           "(DESIGN.md: 0 background .. 5 shade-off), e.g. data.astype(np.uint8) after rounding")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise RefusedInput(f"{where}: label codes {data.min()} .. {data.max()} do not fit uint8; use codes 0..255")
    return data.astype(np.uint8, copy=False)


def _open(path: str | Path, names: tuple[str, ...], what: str) -> tuple[h5py.File, str]:
    """The open file and the first of ``names`` it holds; a :class:`RefusedInput` naming the fix otherwise.

    A file whose writer died (still marked open for writing) is opened read-only with SWMR.
    """
    path = Path(path)
    if not path.is_file():
        raise RefusedInput(f"{what} file {path} does not exist; pass the path of an existing HDF5 file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise RefusedInput(f"{path} is not a readable HDF5 file ({exc}); pass a {what} file") from None
        h5 = h5py.File(path, "r", swmr=True)
    for name in names:
        if name in h5:
            return h5, name
    h5.close()
    raise RefusedInput(f"{path} has no /{names[0]} dataset: it is not a {what} file (DESIGN.md: /{names[0]}, "
                       f"z-y-x, attribute voxel_size_um)")


def _voxel_size(h5: h5py.File, dataset: str, path: str | Path) -> float:
    for owner in (h5[dataset], h5):
        if "voxel_size_um" in owner.attrs:
            return float(owner.attrs["voxel_size_um"])
    raise RefusedInput(f"{path}: /{dataset} carries no voxel_size_um attribute; add it (micrometres per voxel)")


def _three_d(h5: h5py.File, name: str, path: str | Path, what: str) -> h5py.Dataset:
    dataset = h5[name]
    if dataset.ndim != 3:
        raise RefusedInput(f"{path}: /{name} has shape {dataset.shape}, not a z-y-x volume; a {what} file holds a "
                           "3-D array (a single slice: store it with a z axis of length 1)")
    return dataset


def read_volume(path: str | Path) -> Volume:
    """``/volume`` of a reconstructed volume file (or a simulator ground_truth.h5's ``/attenuation``)."""
    h5, name = _open(path, ("volume", "attenuation"), "volume")
    with h5:
        data = _three_d(h5, name, path, "volume")[...].astype(np.float32)
        return Volume(data, _voxel_size(h5, name, path), read_provenance(h5))


def read_labels(path: str | Path) -> Volume:
    """``/labels`` (uint8) of a labels file or a simulator ground_truth.h5."""
    h5, name = _open(path, ("labels",), "labels")
    with h5:
        data = checked_labels(_three_d(h5, name, path, "labels")[...], str(path))
        return Volume(data, _voxel_size(h5, name, path), read_provenance(h5))
