"""Reading NXtomo files (this instrument's and others') for reconstruction.

What is read, tolerantly (DESIGN.md, NeXus NXtomo):

* the first entry holding ``instrument/detector/data`` (``/entry`` for this
  instrument; ``/entry0000`` and the like elsewhere), or ``data/data``;
* ``instrument/detector/image_key`` (0 projection, 1 flat, 2 dark; 3 invalid and
  anything else ignored), else ``data/image_key``; absent: every frame a projection
  (then the flats are missing and reconstruction is refused);
* ``sample/rotation_angle`` (degrees; radians if its ``units`` say so), else
  ``data/rotation_angle``;
* frame times: ``instrument/detector/start_time`` (s), else the frame numbers;
* Paganin defaults: ``instrument/beam/incident_energy`` (keV) and
  ``sample/propagation_distance``;
* the pixel: the geometry group's voxel size (at the sample) if present, else
  ``sample/x_pixel_size`` (at the sample), else ``instrument/detector/x_pixel_size``
  (its ``units`` attribute, default metres); a cone beam uses the detector pixel;
* the geometry: ``/entry/geometry`` or ``/entry/instrument/geometry`` (attributes or
  datasets): ``type``, ``source_sample_mm`` / ``source_sample_distance``,
  ``source_detector_mm`` / ``source_detector_distance``, ``detector_pixel_um`` /
  ``detector_pixel_size``, ``voxel_size_um`` / ``voxel_size`` (datasets with a ``units``
  attribute); else ``instrument/source/distance``
  (upstream: negative or positive) and ``instrument/detector/distance`` (both with
  units, default metres) give a cone beam when the source is closer than
  ``FAR_SOURCE_MM``; otherwise (or absent) parallel beam.

Frames are not read here: :class:`NxTomoScan` keeps the file open and reads frames
of one kind by index, in slabs of rows or chunks of angles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters a file may use)
import numpy as np

from .errors import ReconInputError

if TYPE_CHECKING:
    from .geometry import Geometry

FAR_SOURCE_MM = 1000.0
"""A source farther than this from the sample (a synchrotron) is treated as a parallel beam."""
PROJECTION, FLAT, DARK = 0, 1, 2
_LENGTH_TO_MM = {"m": 1e3, "metre": 1e3, "meter": 1e3, "mm": 1.0, "millimetre": 1.0, "millimeter": 1.0,
                 "um": 1e-3, "µm": 1e-3, "micron": 1e-3, "micrometre": 1e-3, "micrometer": 1e-3, "nm": 1e-6,
                 "cm": 10.0}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _length_mm(node: h5py.Dataset) -> float:
    value = float(np.asarray(node[()]).reshape(-1)[0])
    units = _text(node.attrs.get("units", "m")).strip().lower()
    if units not in _LENGTH_TO_MM:
        raise ReconInputError(f"{node.name} has units {units!r}, not a length unit this reader knows "
                              f"({', '.join(sorted(_LENGTH_TO_MM))})")
    return value * _LENGTH_TO_MM[units]


def _find_entry(h5: h5py.File, path: Path) -> h5py.Group:
    for name in sorted(h5):
        group = h5[name]
        if isinstance(group, h5py.Group) and ("instrument/detector/data" in group or "data/data" in group):
            return group
    raise ReconInputError(
        f"{path} holds no NXtomo entry (no <entry>/instrument/detector/data or <entry>/data/data); give an NXtomo "
        "file written by the instrument or converted with nxtomomill"
    )


def _first(entry: h5py.Group, *names: str) -> h5py.Dataset | None:
    for name in names:
        if name in entry:
            return entry[name]
    return None


def _geometry_number(group: h5py.Group, key_mm_or_um: str, dataset: str) -> float | None:
    """A length (mm) from our geometry group: attribute/dataset ``key_mm_or_um`` (unit in the name), or
    ``dataset`` with a ``units`` attribute (the NXtomo writer's NXcollection)."""
    scale = 1e-3 if key_mm_or_um.endswith("_um") else 1.0
    if key_mm_or_um in group.attrs:
        return float(group.attrs[key_mm_or_um]) * scale
    if key_mm_or_um in group:
        return float(group[key_mm_or_um][()]) * scale
    if dataset in group:
        node = group[dataset]
        return _length_mm(node) if "units" in node.attrs else float(node[()])
    return None


def _geometry_type(group: h5py.Group) -> str:
    value = group.attrs["type"] if "type" in group.attrs else (group["type"][()] if "type" in group else "parallel")
    return _text(value).strip().lower()


@dataclass(frozen=True)
class GeometryInfo:
    """What the file says about the beam: kind, distances (cone), pixel at the detector and at the sample."""

    kind: str
    sample_pixel_mm: float | None
    detector_pixel_mm: float | None
    source_sample_mm: float | None = None
    source_detector_mm: float | None = None


def _read_geometry(entry: h5py.Group) -> GeometryInfo:
    detector_pixel = _first(entry, "instrument/detector/x_pixel_size")
    sample_pixel = _first(entry, "sample/x_pixel_size")
    det_mm = _length_mm(detector_pixel) if detector_pixel is not None else None
    sample_mm = _length_mm(sample_pixel) if sample_pixel is not None else None
    ours = _first(entry, "geometry", "instrument/geometry")
    if isinstance(ours, h5py.Group):
        voxel = _geometry_number(ours, "voxel_size_um", "voxel_size")
        sample_mm = voxel if voxel is not None else sample_mm
        if _geometry_type(ours) == "cone":
            sod = _geometry_number(ours, "source_sample_mm", "source_sample_distance")
            sdd = _geometry_number(ours, "source_detector_mm", "source_detector_distance")
            if sod is None or sdd is None:
                raise ReconInputError(f"{ours.name} says type 'cone' but lacks the source-sample or source-detector "
                                      "distance; add them or reconstruct as parallel beam")
            detector = _geometry_number(ours, "detector_pixel_um", "detector_pixel_size")
            det_mm = detector if detector is not None else det_mm
            if det_mm is None and sample_mm is not None:
                det_mm = sample_mm * sdd / sod
            return GeometryInfo("cone", sample_mm, det_mm, sod, sdd)
        return GeometryInfo("parallel", sample_mm if sample_mm is not None else det_mm, det_mm)
    source, detector = _first(entry, "instrument/source/distance"), _first(entry, "instrument/detector/distance")
    if source is not None and detector is not None:
        sod = abs(_length_mm(source))
        if 0 < sod < FAR_SOURCE_MM:
            return GeometryInfo("cone", sample_mm, det_mm, sod, sod + abs(_length_mm(detector)))
    return GeometryInfo("parallel", sample_mm if sample_mm is not None else det_mm, det_mm)


class NxTomoScan:
    """An open NXtomo file: frame indices by kind, angles, geometry; frames read on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ReconInputError(f"{self.path} does not exist; give the path of an NXtomo (.nxs) file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            if "already open for write" not in str(exc):
                raise ReconInputError(f"{self.path} is not a readable HDF5 file ({exc}); give an NXtomo (.nxs) "
                                      "file") from None
            self._h5 = h5py.File(self.path, "r", swmr=True)  # its writer died: read what it flushed
        entry = _find_entry(self._h5, self.path)
        self.entry_name = entry.name
        self.data = _first(entry, "instrument/detector/data", "data/data")
        if self.data.ndim != 3:
            raise ReconInputError(f"{self.data.name} has shape {self.data.shape}; NXtomo frames are (n, rows, cols)")
        n = self.data.shape[0]
        keys = _first(entry, "instrument/detector/image_key", "data/image_key")
        self.image_key = np.zeros(n, dtype=int) if keys is None else np.asarray(keys[()], dtype=int).reshape(-1)
        angles = _first(entry, "sample/rotation_angle", "data/rotation_angle")
        if angles is None:
            raise ReconInputError(f"{self.path} has no sample/rotation_angle: the angle of each frame is needed")
        values = np.asarray(angles[()], dtype=np.float64).reshape(-1)
        if _text(angles.attrs.get("units", "degree")).strip().lower().startswith("rad"):
            values = np.degrees(values)
        self.angles_all = values
        if self.image_key.size != n or values.size != n:
            raise ReconInputError(
                f"{self.path}: {n} frames but {self.image_key.size} image keys and {values.size} rotation angles; "
                "every frame needs one of each"
            )
        self.info = _read_geometry(entry)
        times = _first(entry, "instrument/detector/start_time")
        self.frame_times = np.arange(n, dtype=np.float64) if times is None or times.shape != (n,) else \
            np.asarray(times[()], dtype=np.float64)
        energy = _first(entry, "instrument/beam/incident_energy")
        self.energy_kev = float(np.asarray(energy[()]).reshape(-1)[0]) if energy is not None else None
        propagation = _first(entry, "sample/propagation_distance")
        self.propagation_mm = _length_mm(propagation) if propagation is not None else None

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> NxTomoScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of a frame."""
        return int(self.data.shape[1]), int(self.data.shape[2])

    def indices(self, kind: int) -> np.ndarray:
        """Frame indices (file order) of projections (0), flats (1) or darks (2)."""
        return np.flatnonzero(self.image_key == kind)

    def flat_groups(self) -> list[np.ndarray]:
        """Flat frames grouped by runs of consecutive frame numbers, as positions into ``indices(FLAT)``."""
        flats = self.indices(FLAT)
        if flats.size == 0:
            return []
        breaks = np.flatnonzero(np.diff(flats) > 1) + 1
        return np.split(np.arange(flats.size), breaks)

    def read(self, frames: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """Frames (by file index) as float32, optionally a slab of rows."""
        frames = np.asarray(frames, dtype=int)
        if frames.size == 0:
            return np.zeros((0, *self.data.shape[1:]), dtype=np.float32)[:, rows]
        runs = np.split(frames, np.flatnonzero(np.diff(frames) != 1) + 1)  # contiguous runs read as slices
        return np.concatenate([np.asarray(self.data[run[0]:run[-1] + 1, rows, :], dtype=np.float32) for run in runs])

    def respiration(self) -> tuple[np.ndarray, np.ndarray]:
        """Respiratory phase and gate (1: end-expiration) of each projection, from ``frames/`` (retrospective
        gating)."""
        entry = self._h5[self.entry_name]
        phase, gate = (_first(entry, f"frames/{name}") for name in ("respiratory_phase", "gate"))
        projections = self.indices(PROJECTION)
        if phase is None or gate is None or phase.shape != self.image_key.shape or gate.shape != phase.shape:
            raise ReconInputError(f"{self.path} records no respiratory phase and gate per frame "
                                  "(entry/frames/respiratory_phase, gate): scan with gating='retrospective', or "
                                  "correct rigid motion (--motion rigid)")
        return (np.asarray(phase[()], dtype=np.float64)[projections],
                np.asarray(gate[()], dtype=np.float64)[projections])

    def geometry(self, pixel_um: float | None = None) -> Geometry:
        """The scan's geometry (projection angles, detector, pixel); ``pixel_um`` overrides the file's pixel."""
        from .geometry import ConeGeometry, ParallelGeometry  # torch: not needed to open and check the file

        rows, cols = self.shape
        angles = self.angles_all[self.indices(PROJECTION)]
        info = self.info
        if info.kind == "cone":
            pixel = pixel_um * 1e-3 * info.source_detector_mm / info.source_sample_mm if pixel_um else \
                info.detector_pixel_mm
            if pixel is None:
                raise ReconInputError(f"{self.path} gives no pixel size (x_pixel_size); pass it (--pixel-um)")
            return ConeGeometry(angles, rows, cols, pixel, info.source_sample_mm, info.source_detector_mm)
        pixel = pixel_um * 1e-3 if pixel_um else info.sample_pixel_mm
        if pixel is None:
            raise ReconInputError(f"{self.path} gives no pixel size (x_pixel_size); pass it (--pixel-um)")
        return ParallelGeometry(angles, rows, cols, pixel)
