"""Imaging geometries (lab cone beam, TXM parallel beam) and their coordinate conventions.

Conventions (what a reconstruction must assume to compare voxel for voxel):

* Lab frame, mm: +y runs along the beam (source towards detector), +z is vertical and
  is the rotation axis, +x = y cross z (to the right seen from the source). The origin
  lies on the rotation axis at the height of the detector centre.
* Specimen frame: the phantom's frame (phantom.py); at rotation angle 0 it coincides
  with the lab frame. A specimen point p maps to the lab as
  ``Rz(angle) @ (S @ p + breathing) + stage``, where Rz turns counter-clockwise seen
  from +z (positive angle = right-handed about +z), S = diag(1 + nu e, 1 + nu e, 1 - e)
  is the axial strain e of the load (compression positive, fixed point at the origin),
  ``breathing`` is the respiratory displacement (specimen frame) and ``stage`` is the
  sample stages' offset in the lab: (sx, sz, sy) with sx across the beam (lab x), sy
  vertical (lab z), sz along the beam (lab y); the stages carry the rotation axis.
* Detector: column index increases with +x, row index with +z (row 0 is the lowest
  row). The rotation axis at stage offset 0 projects onto the detector centre (between
  the two middle columns for an even count); a binned pixel (r, c) covers physical
  pixels r*b .. r*b+b-1 and c*b .. c*b+b-1.
* Cone beam: source at (0, -SOD, 0), detector plane y = SDD - SOD, magnification SDD/SOD,
  pixel at the sample = pixel * binning / magnification (at the rotation axis).
* Parallel beam (TXM): rays along +y; a detector pixel maps to the sample plane as
  pixel * binning / objective magnification (the image is not inverted here).
* Ground-truth volumes (groundtruth.py) are z-y-x arrays in the specimen frame at
  angle 0, unloaded, at rest: voxel (k, j, i) has its centre at
  ((i + 0.5 - nx/2) v, (j + 0.5 - ny/2) v, (k + 0.5 - nz/2) v), v the voxel size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation_z(angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Pose:
    """Where the specimen is in the lab for one frame: specimen -> lab is linear @ p + translation."""

    angle_deg: float
    translation_mm: tuple[float, float, float]
    axial_strain: float = 0.0
    poisson_ratio: float = 0.0

    @staticmethod
    def of(angle_deg: float, sample_offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
           breathing_mm: np.ndarray | None = None, axial_strain: float = 0.0, poisson_ratio: float = 0.0) -> Pose:
        """Pose from the stage readings (sx, sy, sz) and a specimen-frame breathing displacement."""
        sx, sy, sz = sample_offset_mm
        translation = np.array([sx, sz, sy], dtype=float)
        if breathing_mm is not None:
            translation = translation + rotation_z(angle_deg) @ np.asarray(breathing_mm, float)
        return Pose(float(angle_deg), tuple(float(v) for v in translation), float(axial_strain), float(poisson_ratio))

    @property
    def linear(self) -> np.ndarray:
        lateral = 1.0 + self.poisson_ratio * self.axial_strain
        return rotation_z(self.angle_deg) @ np.diag([lateral, lateral, 1.0 - self.axial_strain])

    @property
    def translation(self) -> np.ndarray:
        return np.asarray(self.translation_mm)

    def to_lab(self, points: np.ndarray) -> np.ndarray:
        return points @ self.linear.T + self.translation

    def to_specimen(self, points: np.ndarray) -> np.ndarray:
        return (points - self.translation) @ np.linalg.inv(self.linear).T


@dataclass(frozen=True)
class DetectorGrid:
    """Sample positions on the detector: ``rows`` x ``cols`` centred samples spaced ``pitch_mm``.

    For the cone beam the pitch is measured in the detector plane, for the parallel beam
    in the sample plane. ``x_offset_mm``/``z_offset_mm`` shift the grid's centre.
    """

    rows: int
    cols: int
    pitch_mm: float
    x_offset_mm: float = 0.0
    z_offset_mm: float = 0.0

    def col_x(self, cols: np.ndarray) -> np.ndarray:
        return self.x_offset_mm + (np.asarray(cols, float) + 0.5 - self.cols / 2) * self.pitch_mm

    def row_z(self, rows: np.ndarray) -> np.ndarray:
        return self.z_offset_mm + (np.asarray(rows, float) + 0.5 - self.rows / 2) * self.pitch_mm

    def col_of(self, x: np.ndarray) -> np.ndarray:
        return (x - self.x_offset_mm) / self.pitch_mm + self.cols / 2 - 0.5

    def row_of(self, z: np.ndarray) -> np.ndarray:
        return (z - self.z_offset_mm) / self.pitch_mm + self.rows / 2 - 0.5


@dataclass(frozen=True)
class Projection:
    """Where specimen points land on the grid, with the local scale and ray direction there."""

    rows: np.ndarray
    cols: np.ndarray
    scale_mm: np.ndarray
    """Length at the point's depth that one grid step covers (mm)."""
    directions: np.ndarray
    """Unit ray directions in the lab (n, 3)."""


class ConeBeam:
    """Point source, flat detector."""

    kind = "cone"

    def __init__(self, source_sample_mm: float, source_detector_mm: float) -> None:
        self.sod = source_sample_mm
        self.sdd = source_detector_mm

    @property
    def magnification(self) -> float:
        return self.sdd / self.sod

    def endpoints(self, grid: DetectorGrid, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lab ray start (source) and end (detector sample) for grid positions (broadcast)."""
        rows, cols = np.broadcast_arrays(np.asarray(rows, float), np.asarray(cols, float))
        end = np.stack([grid.col_x(cols), np.full(cols.shape, self.sdd - self.sod), grid.row_z(rows)], axis=-1)
        start = np.broadcast_to(np.array([0.0, -self.sod, 0.0]), end.shape)
        return start, end

    def project(self, grid: DetectorGrid, pose: Pose, points: np.ndarray) -> Projection:
        lab = pose.to_lab(points)
        depth = lab[:, 1] + self.sod
        factor = self.sdd / depth
        rel = lab - np.array([0.0, -self.sod, 0.0])
        return Projection(grid.row_of(lab[:, 2] * factor), grid.col_of(lab[:, 0] * factor),
                          grid.pitch_mm / factor, rel / np.linalg.norm(rel, axis=1, keepdims=True))


class ParallelBeam:
    """Parallel rays along +y; the grid lives in the sample plane."""

    kind = "parallel"
    HALF_LENGTH_MM = 1000.0
    """Rays run from y = -HALF_LENGTH_MM to +HALF_LENGTH_MM: far beyond any specimen."""

    def __init__(self, magnification: float) -> None:
        self.magnification = magnification

    def endpoints(self, grid: DetectorGrid, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = np.broadcast_arrays(np.asarray(rows, float), np.asarray(cols, float))
        x, z = grid.col_x(cols), grid.row_z(rows)
        start = np.stack([x, np.full(x.shape, -self.HALF_LENGTH_MM), z], axis=-1)
        end = np.stack([x, np.full(x.shape, self.HALF_LENGTH_MM), z], axis=-1)
        return start, end

    def project(self, grid: DetectorGrid, pose: Pose, points: np.ndarray) -> Projection:
        lab = pose.to_lab(points)
        n = len(lab)
        return Projection(grid.row_of(lab[:, 2]), grid.col_of(lab[:, 0]), np.full(n, grid.pitch_mm),
                          np.tile([0.0, 1.0, 0.0], (n, 1)))


Geometry = ConeBeam | ParallelBeam


@dataclass(frozen=True)
class Rays:
    """The rays of one view in the specimen frame: A + t D, t in [0, 1], lab length |D_lab| per unit t.

    The lab's x-y depends on the column only and z on the row only, so for the z-invariant
    parts of the phantom x-y intervals are per column and z intervals per row.
    """

    geometry: Geometry
    grid: DetectorGrid
    pose: Pose

    def at(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, D, lab length per unit t) for grid positions (float indices allowed, broadcast)."""
        start, end = self.geometry.endpoints(self.grid, rows, cols)
        lab_length = np.linalg.norm(end - start, axis=-1)
        a = self.pose.to_specimen(start.reshape(-1, 3)).reshape(start.shape)
        b = self.pose.to_specimen(end.reshape(-1, 3)).reshape(end.shape)
        return a, b - a, lab_length

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Specimen-frame x-y of A and D for every column, each (cols, 2)."""
        a, d, _ = self.at(np.zeros(self.grid.cols), np.arange(self.grid.cols))
        return a[:, :2], d[:, :2]

    def row_z(self) -> tuple[np.ndarray, np.ndarray]:
        """Specimen-frame z of A and D for every row, each (rows,)."""
        a, d, _ = self.at(np.arange(self.grid.rows), np.zeros(self.grid.rows))
        return a[:, 2], d[:, 2]

    def lab_lengths(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Lab length per unit t for rows (r,) x cols (c,) -> (r, c)."""
        if isinstance(self.geometry, ParallelBeam):
            return np.full((len(rows), len(cols)), 2 * ParallelBeam.HALF_LENGTH_MM)
        x2, z2 = self.grid.col_x(cols) ** 2, self.grid.row_z(rows) ** 2
        return np.sqrt(z2[:, None] + (x2 + self.geometry.sdd**2)[None, :])

    def project(self, points: np.ndarray) -> Projection:
        return self.geometry.project(self.grid, self.pose, points)
