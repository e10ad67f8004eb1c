"""Scan geometries (parallel beam, lab cone beam) and the reconstruction grid.

Conventions, the simulator's (physics/geometry.py), so that a reconstruction of
simulated data lands voxel for voxel on its ground truth:

* Specimen frame, mm: z is the rotation axis. A frame taken at rotation angle theta
  sees the specimen turned counter-clockwise about +z by theta: a specimen point p
  sits at q = Rz(theta) p in the lab, plus the lateral axis offset (below).
* Lab: the beam runs along +y; detector columns increase with +x, rows with +z
  (row 0 is the lowest row). Pixel centres sit at integer indices.
* ``cor``: the detector column (fractional, 0-based) onto which the rotation axis
  projects; None means the detector centre, (cols - 1) / 2.
* Parallel beam: ``pixel_mm`` is the pixel at the sample; column = cor + q_x / pixel,
  row = (rows - 1) / 2 + q_z / pixel.
* Cone beam: source at (0, -SOD, 0), flat detector at y = SDD - SOD, ``pixel_mm`` at
  the detector; the central ray hits the detector at column (cols - 1) / 2 +
  ``detector_offset_px[0]`` and row (rows - 1) / 2 + ``detector_offset_px[1]``; the
  rotation axis sits at lab x = (cor - central column) * pixel / M, M = SDD / SOD.
* Volumes are z-y-x; voxel (k, j, i) has its centre at ((i + 0.5 - nx/2) v,
  (j + 0.5 - ny/2) v, (k + 0.5 - nz/2) v) + ``centre_mm`` (x, y, z).
* Detector misalignment (projector.py): ``tilt_deg`` turns the detector in its own plane
  (about the beam axis y, from +x towards -z: a point of the column axis at u mm sits at
  lab (u cos tilt, ., -u sin tilt)); ``roll_deg`` (cone beam) then turns it about the lab
  x axis (rows lean towards the source: a point of the row axis at v mm sits at lab
  (., -v sin roll, v cos roll)). Both turn about the pixel where the central ray (cone)
  or the axis at z = 0 (parallel) meets the detector.

Angles and ``cor`` may be torch tensors that require gradients: every operator built
on these classes is differentiable in them (geometry calibration, motion correction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .errors import ReconInputError

Angles = Sequence[float] | np.ndarray | torch.Tensor
Scalar = float | torch.Tensor


def as_tensor(value: Angles | Scalar, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``value`` as a tensor on ``device``; a tensor keeps its autograd graph."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)


def _angles_array(angles_deg: Angles) -> np.ndarray:
    if isinstance(angles_deg, torch.Tensor):
        return angles_deg.detach().cpu().double().numpy().reshape(-1)
    return np.asarray(angles_deg, dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class VolumeGrid:
    """The reconstruction grid: shape (nz, ny, nx), cubic voxels of ``voxel_mm``, centred at ``centre_mm`` (x, y, z)."""

    shape: tuple[int, int, int]
    voxel_mm: float
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(n) < 1 for n in self.shape):
            raise ReconInputError(f"volume shape {self.shape} must be three positive sizes (nz, ny, nx)")
        if not self.voxel_mm > 0:
            raise ReconInputError(f"voxel size {self.voxel_mm} mm must be > 0")

    def axis(self, index: int, device: torch.device | str) -> torch.Tensor:
        """Voxel-centre coordinates (mm) along x (0), y (1) or z (2)."""
        n = self.shape[2 - index]
        steps = torch.arange(n, device=device, dtype=torch.float32) + 0.5 - n / 2
        return steps * self.voxel_mm + self.centre_mm[index]

    @property
    def voxel_size_um(self) -> float:
        return self.voxel_mm * 1e3


@dataclass(frozen=True)
class ParallelGeometry:
    """Parallel-beam scan: measured angle per projection, detector size, pixel at the sample (mm), axis column."""

    angles_deg: Angles
    rows: int
    cols: int
    pixel_mm: float
    cor: Scalar | None = None
    tilt_deg: Scalar = 0.0
    kind: str = field(default="parallel", init=False)

    def __post_init__(self) -> None:
        _check_detector(self)

    @property
    def sample_pixel_mm(self) -> float:
        return self.pixel_mm

    @property
    def num_angles(self) -> int:
        return int(_angles_array(self.angles_deg).size)

    @property
    def angles_array(self) -> np.ndarray:
        """Angles (degrees) as a float64 array, detached."""
        return _angles_array(self.angles_deg)

    def cor_value(self) -> Scalar:
        return (self.cols - 1) / 2 if self.cor is None else self.cor

    def with_angles(self, angles_deg: Angles) -> ParallelGeometry:
        return replace(self, angles_deg=angles_deg)

    def with_cor(self, cor: Scalar | None) -> ParallelGeometry:
        return replace(self, cor=cor)

    def is_tilted(self) -> bool:
        """Whether the detector may be turned in its plane: tilt_deg not 0, or a tensor (being estimated)."""
        return isinstance(self.tilt_deg, torch.Tensor) or self.tilt_deg != 0

    def default_volume(self) -> VolumeGrid:
        """rows x cols x cols voxels of the sample pixel: the grid the simulator's ground truth uses."""
        return VolumeGrid((self.rows, self.cols, self.cols), self.pixel_mm)


@dataclass(frozen=True)
class ConeGeometry:
    """Lab cone-beam scan: measured angles, flat detector (pixel at the detector, mm), source distances (mm)."""

    angles_deg: Angles
    rows: int
    cols: int
    pixel_mm: float
    source_sample_mm: float
    source_detector_mm: float
    cor: Scalar | None = None
    detector_offset_px: tuple[Scalar, Scalar] = (0.0, 0.0)
    tilt_deg: Scalar = 0.0
    roll_deg: Scalar = 0.0
    kind: str = field(default="cone", init=False)

    def __post_init__(self) -> None:
        _check_detector(self)
        if not 0 < self.source_sample_mm < self.source_detector_mm:
            raise ReconInputError(
                f"cone beam needs 0 < source_sample_mm ({self.source_sample_mm}) < source_detector_mm "
                f"({self.source_detector_mm}); give the distances from the focal spot to the rotation axis and to "
                "the detector"
            )

    @property
    def magnification(self) -> float:
        return self.source_detector_mm / self.source_sample_mm

    @property
    def sample_pixel_mm(self) -> float:
        """Pixel size at the rotation axis (mm)."""
        return self.pixel_mm / self.magnification

    @property
    def num_angles(self) -> int:
        return int(_angles_array(self.angles_deg).size)

    @property
    def angles_array(self) -> np.ndarray:
        return _angles_array(self.angles_deg)

    @property
    def central_col(self) -> float:
        return (self.cols - 1) / 2 + self.detector_offset_px[0]

    @property
    def central_row(self) -> float:
        return (self.rows - 1) / 2 + self.detector_offset_px[1]

    def cor_value(self) -> Scalar:
        return self.central_col if self.cor is None else self.cor

    def half_fan_angle_rad(self) -> float:
        """Largest angle between a ray reaching the detector and the central ray, in the horizontal plane."""
        reach = max(self.central_col, self.cols - 1 - self.central_col) + 0.5
        return math.atan(reach * self.pixel_mm / self.source_detector_mm)

    def with_angles(self, angles_deg: Angles) -> ConeGeometry:
        return replace(self, angles_deg=angles_deg)

    def with_cor(self, cor: Scalar | None) -> ConeGeometry:
        return replace(self, cor=cor)

    def is_tilted(self) -> bool:
        """Whether the detector may be turned (tilt_deg or roll_deg not 0, or a tensor: being estimated)."""
        return any(isinstance(a, torch.Tensor) or a != 0 for a in (self.tilt_deg, self.roll_deg))

    def default_volume(self) -> VolumeGrid:
        return VolumeGrid((self.rows, self.cols, self.cols), self.sample_pixel_mm)


Geometry = ParallelGeometry | ConeGeometry


def _check_detector(geometry: ParallelGeometry | ConeGeometry) -> None:
    if geometry.rows < 1 or geometry.cols < 2:
        raise ReconInputError(f"detector of {geometry.rows} x {geometry.cols} pixels is too small: need >= 1 x 2")
    if not geometry.pixel_mm > 0:
        raise ReconInputError(f"pixel size {geometry.pixel_mm} mm must be > 0 (check x_pixel_size in the file)")
    angles = _angles_array(geometry.angles_deg)
    if angles.size == 0 or not np.all(np.isfinite(angles)):
        raise ReconInputError("rotation angles must be finite and at least one per projection; check rotation_angle")
