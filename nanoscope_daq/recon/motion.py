"""Rigid motion correction: a translation of the specimen per projection, estimated from the data alone.

The specimen at projection i is taken to sit at Rz(theta_i) p + s_i in the lab (s_i in
mm: lab x across the beam, lab z along the axis). The shifts s are the variables of the
same reprojection-consistency objective as the geometry calibration (calibrate.py): the
projections are reconstructed by FBP / FDK with every projection moved back by its s_i
(projector.py's back-projection), reprojected through the same shifts, and compared with
the data. A jump of the specimen between two projections makes the projections after it
inconsistent with those before; the gradient of the mismatch in each s_i (autograd
through both operators) moves them back into agreement. Every projection has its own
shift, so all projections are compared. A translation t of the whole specimen moves
projection i by t_x cos theta_i - t_y sin theta_i across the beam and t_z along the axis:
such shifts only move the volume, the data cannot tell them, so they are projected out
of the estimate (``unobservable_removed``). L-BFGS does the descent, coarse to fine: the
projections are first compared blurred by ``SMOOTHING_PX[0]`` (a jump of several pixels
still overlaps its target, so the descent sees where to go), then less blurred.

The lab y shift (along the beam) is not estimated: a parallel beam cannot see it and a
cone beam sees it only as a change of magnification of a fraction of a percent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .algorithms import RAM_LAK, FilterSpec, as_projections, direct_algorithm, reconstruct
from .calibrate import ReprojectionConsistency, lbfgs_minimise
from .geometry import Geometry, VolumeGrid

SMOOTHING_PX = (4.0, 2.0, 1.0)
"""Blur of the compared projections at each stage of the descent (px)."""


@dataclass(frozen=True)
class MotionResult:
    """Shifts (angles, 3) in mm (lab x, y, z; y is 0), the objective without and with them (both at the finest
    stage's blur), evaluations and time."""

    shifts_mm: np.ndarray
    objective_start: float
    objective: float
    evaluations: int
    seconds: float


def estimate_motion(line_integrals: np.ndarray | torch.Tensor, geometry: Geometry, *,
                    volume: VolumeGrid | None = None, filter: FilterSpec = RAM_LAK,
                    evaluations: int = 30, smoothing_px: tuple[float, ...] = SMOOTHING_PX,
                    device: torch.device | str = "cpu") -> MotionResult:
    """The specimen's translation at each projection (module docstring); the geometry is taken as calibrated.

    ``evaluations``: most objective evaluations per stage of ``smoothing_px``.
    """
    projections = as_projections(line_integrals, geometry, device)
    volume = volume or geometry.default_volume()
    steps = torch.zeros(geometry.num_angles, 2, dtype=torch.float64, device=device, requires_grad=True)
    voxel = volume.voxel_mm  # the optimiser works in voxels
    theta = torch.from_numpy(np.radians(geometry.angles_array)).to(device)
    began = time.perf_counter()

    def shifts(x: torch.Tensor) -> torch.Tensor:
        observable = unobservable_removed(x, theta).float() * voxel
        return torch.stack([observable[:, 0], torch.zeros_like(observable[:, 0]), observable[:, 1]], dim=1)

    count = 0
    for blur in smoothing_px:
        objective = ReprojectionConsistency(projections, geometry, volume, filter, geometry.num_angles,
                                            smoothing_px=blur)
        count += lbfgs_minimise(steps, lambda stage=objective: stage(geometry, shifts(steps)), evaluations,
                                history_size=20)
    found = shifts(steps.detach())
    with torch.no_grad():  # both with the last stage's blur: each stage compares at its own
        objective_start = float(objective(geometry, shifts(torch.zeros_like(steps))))
        final = float(objective(geometry, found))
    return MotionResult(found.cpu().numpy().astype(np.float64), objective_start, final, count,
                        time.perf_counter() - began)


def unobservable_removed(shifts: torch.Tensor, angles_rad: torch.Tensor) -> torch.Tensor:
    """Shifts (angles, 2: lab x, lab z) less what a translation of the whole specimen would cause.

    Lab x: the least-squares fit of a cos(theta) + b sin(theta) is subtracted; lab z: the mean.
    """
    basis = torch.stack([torch.cos(angles_rad), torch.sin(angles_rad)], dim=1).to(shifts.dtype)
    coefficients = torch.linalg.lstsq(basis, shifts[:, :1]).solution
    across = shifts[:, 0] - (basis @ coefficients)[:, 0]
    along = shifts[:, 1] - shifts[:, 1].mean()
    return torch.stack([across, along], dim=1)


def reconstruct_with_motion(line_integrals: np.ndarray | torch.Tensor, geometry: Geometry, motion: MotionResult,
                            volume: VolumeGrid | None = None, filter: FilterSpec = RAM_LAK,
                            device: torch.device | str = "cpu") -> torch.Tensor:
    """FBP / FDK with every projection moved back by its estimated shift."""
    return reconstruct(line_integrals, geometry, volume, algorithm=direct_algorithm(geometry), filter=filter,
                       shifts_mm=torch.from_numpy(motion.shifts_mm).float(), device=device)
