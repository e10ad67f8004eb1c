"""Breathing motion of a living specimen, estimated from the data with the recorded respiratory phase.

Each frame of a retrospectively gated scan carries the physiology monitor's respiratory
phase (0 at the start of inspiration) and gate (1 in end-expiration). The specimen moves
with the chest: in its own frame (it turns with the stage) by a displacement that follows
the breath, the same breath after breath up to its depth. The model:

    d_i = a_{b(i)} D(phase_i),   s_i = Rz(theta_i) d_i   (lab shift, projector.py's convention)

* ``D``: the displacement through a breath (mm, specimen x, y, z), piecewise linear over
  ``knots`` equally spaced phases from 0 to the phase at which the gate opens, 0 at both
  ends and after (the end-expiratory pause is the rest position every frame is
  reconstructed at);
* ``a_b``: the depth of breath ``b`` (1 on average), breaths counted at each wrap of the
  phase.

That is 3 x knots + breaths numbers against 3 per projection, and every knot is seen
from every breath, at other angles: a specimen-frame displacement turns with the stage,
so its x and y show across the beam at different angles and its z along the axis.

Estimation: joint reconstruction and reprojection (projection matching, as tomopy's
``align_joint`` for nano-CT, Gursoy et al. 2017, with the breathing model in place of a
free shift per projection). Each round reconstructs a volume at the current motion
(FDK / FBP, the first round from the gate-open frames alone, which are at rest), projects
it through the known forward operator at every moving frame's angle, and fits the model
so that each reprojection, moved on the detector by its frame's shift (and, in the cone
beam, zoomed by the shift along the beam), matches the measured frame: L-BFGS on the
mean squared difference, with autograd through the image warp, coarse to fine
(``smoothing_px``). A translation moves a projection without changing it, to the
projector's accuracy (parallel beam: exactly; cone beam: magnification varies across a
specimen of radius r by r / SOD, 0.5 % for the full-size leg, 0.03 px for a 50 um
breath), so each evaluation is a 2D warp of the reprojections, not a reprojection: a
round costs one reconstruction and one forward projection, whatever the number of
evaluations. The middle rows are compared (calibrate.middle_rows); rows a shift brings in
from beyond the detector are taken as its edge row.

Why not the reprojection-consistency objective of motion.py (a shift per projection,
autograd through FDK and the projector): on the demo's breathing (50 um = 23 px, 40 % of
the frames moving) it does not find the breaths (docs/recon.md), and each evaluation
reprojects every projection with gradients (14 s at 48 x 72 px, 360 angles).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .algorithms import RAM_LAK, FilterSpec, angles_rad, as_projections, direct_algorithm, reconstruct
from .calibrate import blurred, lbfgs_minimise, middle_rows
from .errors import ReconInputError
from .geometry import Geometry, VolumeGrid
from .motion import MotionResult
from .projector import detector_frame, forward_project

KNOTS = 12
"""Phases at which the breath's displacement is a variable (equally spaced before the gate opens)."""
SMOOTHING_PX = (8.0, 4.0, 2.0, 1.0)
"""Blur of the compared frames at each stage of a round's fit (px)."""
ROUNDS = 3
"""Reconstruct -> reproject -> fit rounds."""


@dataclass(frozen=True)
class BreathingModel:
    """The fitted breath: displacement (knots, 3; mm, specimen frame) at ``knots_phase``, and each breath's depth."""

    knots_phase: np.ndarray
    displacement_mm: np.ndarray
    breath_depth: np.ndarray

    def record(self) -> dict:
        """Peak displacement (mm), its direction (unit, specimen frame), the breaths' depth range."""
        peak = int(np.argmax(np.linalg.norm(self.displacement_mm, axis=1)))
        vector = self.displacement_mm[peak]
        size = float(np.linalg.norm(vector))
        return {"peak_mm": size, "peak_phase": float(self.knots_phase[peak]),
                "direction": [float(v) for v in vector / size] if size else [0.0, 0.0, 0.0],
                "breaths": int(self.breath_depth.size),
                "depth_range": [float(self.breath_depth.min()), float(self.breath_depth.max())]}


def breath_numbers(phase: np.ndarray) -> np.ndarray:
    """Which breath each frame is in (0, 1, ...): a new breath wherever the phase falls back (wraps)."""
    return np.concatenate([[0], np.cumsum(np.diff(phase) < -0.5)]).astype(np.int64)


def rest_phase(phase: np.ndarray, gate: np.ndarray) -> float:
    """The phase at which the gate opens (the smallest phase of a gate-open frame): the breath is over by then."""
    open_gate = gate > 0.5
    if not open_gate.any() or open_gate.all():
        raise ReconInputError("respiratory motion needs frames both inside and outside the gate; this scan has "
                              f"{int(open_gate.sum())} of {gate.size} gate-open frames: correct rigid motion instead "
                              "(--motion rigid) or record the physiology with the frames")
    return float(phase[open_gate].min())


class Breathing:
    """The model of the module docstring as a function of its variables: lab shifts (frames, 3) in mm."""

    def __init__(self, phase: np.ndarray, gate: np.ndarray, breath: np.ndarray, angles: torch.Tensor,
                 knots: int, axial: bool = True) -> None:
        self.rest = rest_phase(phase, gate)
        self.knots_phase = np.linspace(0.0, self.rest, knots + 2)
        position = np.clip(phase / self.rest, 0.0, 1.0) * (knots + 1)
        self.lower = torch.from_numpy(np.minimum(np.floor(position), knots).astype(np.int64))
        self.fraction = torch.from_numpy((position - self.lower.numpy()).astype(np.float32))
        self.breath = torch.from_numpy(np.unique(breath, return_inverse=True)[1].astype(np.int64))
        self.angles = angles.float()
        self.knots = knots
        self.axes = 3 if axial else 2  # specimen x, y (and z along the axis)
        # the interior knots' displacements (mm), then each breath's depth less 1
        self.variables = torch.zeros(self.axes * knots + int(self.breath.max()) + 1, dtype=torch.float64,
                                     requires_grad=True)

    @property
    def displacement(self) -> torch.Tensor:
        found = self.variables[:self.axes * self.knots].reshape(self.knots, self.axes)
        return found if self.axes == 3 else torch.cat([found, torch.zeros_like(found[:, :1])], dim=1)

    @property
    def depth(self) -> torch.Tensor:
        return self.variables[self.axes * self.knots:]

    def specimen_mm(self) -> torch.Tensor:
        """Displacement of each frame (frames, 3) in the specimen's frame."""
        zero = torch.zeros(1, 3, dtype=self.displacement.dtype)
        table = torch.cat([zero, self.displacement, zero])  # 0 at the start of the breath and once at rest
        shape = table[self.lower] * (1 - self.fraction[:, None]) + table[self.lower + 1] * self.fraction[:, None]
        return (shape * self.depths()[self.breath][:, None]).float()

    def depths(self) -> torch.Tensor:
        """Each breath's depth, 1 on average (the mean of the variables is not seen: the breath's shape scales)."""
        return 1 + self.depth - self.depth.mean()

    def __call__(self) -> torch.Tensor:
        d = self.specimen_mm()
        c, s = torch.cos(self.angles), torch.sin(self.angles)
        return torch.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1], d[:, 2]], dim=1)

    def model(self) -> BreathingModel:
        with torch.no_grad():
            table = np.vstack([np.zeros((1, 3)), self.displacement.numpy(), np.zeros((1, 3))])
            return BreathingModel(self.knots_phase, table, self.depths().numpy().copy())


class FrameWarp:
    """Reprojections of a still specimen moved and zoomed on the detector as a lab shift moves the specimen."""

    def __init__(self, geometry: Geometry, device: torch.device | str) -> None:
        self.frame = detector_frame(geometry, device)
        self.rows, self.cols = geometry.rows, geometry.cols
        zero = torch.zeros((), device=device)
        self.centre = self.frame.detector_position(self.frame.axis_x, zero, zero)

    def __call__(self, images: torch.Tensor, shifts_mm: torch.Tensor) -> torch.Tensor:
        """``images`` (frames, rows, cols) as they would be with the specimen shifted (rows from beyond the
        detector's edge are its edge row: a limb changes slowly along its axis)."""
        col0, row0 = self.centre
        col, row = self.frame.detector_position(self.frame.axis_x + shifts_mm[:, 0], shifts_mm[:, 1], shifts_mm[:, 2])
        sod = self.frame.sod
        zoom = torch.ones_like(col) if sod is None else sod / (sod + shifts_mm[:, 1])
        # output pixel (c, r) samples the still image at c0 + (c - col) / zoom (and rows alike)
        c = torch.arange(self.cols, dtype=images.dtype, device=images.device)
        r = torch.arange(self.rows, dtype=images.dtype, device=images.device)
        source_c = col0 + (c[None, :] - col[:, None]) / zoom[:, None]
        source_r = row0 + (r[None, :] - row[:, None]) / zoom[:, None]
        grid = torch.stack(torch.broadcast_tensors((2 * source_c[:, None, :] + 1) / self.cols - 1,
                                                   (2 * source_r[:, :, None] + 1) / self.rows - 1), dim=-1)
        moved = F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        return moved[:, 0]


def estimate_respiratory_motion(line_integrals: np.ndarray | torch.Tensor, geometry: Geometry, phase: np.ndarray,
                                gate: np.ndarray, breath: np.ndarray | None = None, *,
                                volume: VolumeGrid | None = None, filter: FilterSpec = RAM_LAK,
                                knots: int = KNOTS, rounds: int = ROUNDS, evaluations: int = 50, axial: bool = True,
                                smoothing_px: tuple[float, ...] = SMOOTHING_PX,
                                device: torch.device | str = "cpu") -> tuple[MotionResult, BreathingModel]:
    """The breathing model of the module docstring fitted to the scan, and the lab shift of every projection.

    ``phase``, ``gate``: each projection's respiratory phase and gate (the frames'
    ``respiratory_phase`` and ``gate``); ``breath``: which breath each frame is in (default:
    :func:`breath_numbers` of the phase; give it when the projections join several scans of the
    same specimen, whose gate-open frames then fill each other's gaps in angle); ``evaluations``:
    most objective evaluations per stage of ``smoothing_px``; ``axial``: fit the displacement along
    the rotation axis too (False: across it only, the part along it held at 0 -- for a specimen
    nearly uniform along its axis, such as a limb, that part is barely seen and the fit can run
    away along it; docs/recon.md). The result's objectives: the mean squared mismatch of the
    moving frames (finest blur, relative to their mean square) with no motion and with the
    fitted motion, against the last round's volume.
    """
    phase, gate = np.asarray(phase, dtype=np.float64), np.asarray(gate, dtype=np.float64)
    if phase.shape != (geometry.num_angles,) or gate.shape != phase.shape:
        raise ReconInputError(f"respiratory phase and gate need one value per projection ({geometry.num_angles}); "
                              f"got {phase.shape} and {gate.shape}")
    if not np.isfinite(phase).all():
        raise ReconInputError("frames without a respiratory phase: record the physiology with the frames")
    began = time.perf_counter()
    projections = as_projections(line_integrals, geometry, device)
    volume = volume or geometry.default_volume()
    theta = angles_rad(geometry, device)
    breathing = Breathing(phase, gate, breath_numbers(phase) if breath is None else np.asarray(breath), theta, knots,
                          axial)
    moving = torch.from_numpy(np.flatnonzero(phase < breathing.rest))
    still = torch.from_numpy(np.flatnonzero(gate > 0.5))
    warp = FrameWarp(geometry, device)
    rows = middle_rows(geometry.rows)
    algorithm = direct_algorithm(geometry)
    count = 0
    for round_number in range(rounds):
        with torch.no_grad():
            if round_number == 0:  # the frames at rest, with their own angular weights
                image = reconstruct(projections[still], geometry.with_angles(geometry.angles_array[still.numpy()]),
                                    volume, algorithm=algorithm, filter=filter, device=device)
            else:
                image = reconstruct(projections, geometry, volume, algorithm=algorithm, filter=filter,
                                    shifts_mm=breathing().detach(), device=device)
            still_views = forward_project(image, volume, geometry, theta[moving])
        for blur in smoothing_px:
            mismatch = FrameMismatch(warp, blurred(still_views, blur), blurred(projections[moving], blur), rows)
            count += lbfgs_minimise(breathing.variables, lambda stage=mismatch: stage(breathing()[moving]),
                                    evaluations, history_size=20)
    with torch.no_grad():  # both against the last round's volume, at the finest blur
        start = float(mismatch(torch.zeros(moving.numel(), 3, device=projections.device)))
        shifts = breathing()
        final = float(mismatch(shifts[moving]))
    model = breathing.model()
    _check_found(model, start, final, geometry)
    return (MotionResult(shifts.cpu().numpy().astype(np.float64), start, final, count, time.perf_counter() - began),
            model)


class FrameMismatch:
    """Mean squared difference of the moving frames and the still specimen's reprojections moved by their shifts,
    over the middle rows, relative to the frames' mean square."""

    def __init__(self, warp: FrameWarp, still_views: torch.Tensor, frames: torch.Tensor, rows: slice) -> None:
        self.warp, self.still_views, self.frames, self.rows = warp, still_views, frames, rows
        self.norm = float((frames[:, rows] ** 2).mean())

    def __call__(self, shifts_mm: torch.Tensor) -> torch.Tensor:
        moved = self.warp(self.still_views, shifts_mm)
        return ((moved - self.frames)[:, self.rows] ** 2).mean() / self.norm


def _check_found(model: BreathingModel, start: float, final: float, geometry: Geometry) -> None:
    """Refuse a fit that did not lower the mismatch or moved the specimen by more than half the field of view."""
    field_mm = geometry.rows * geometry.default_volume().voxel_mm
    peak = float(np.linalg.norm(model.displacement_mm, axis=1).max())
    if not final < start or peak > field_mm / 2:
        raise ReconInputError(
            f"the breath was not found in these frames (mismatch {start:.4g} -> {final:.4g}, peak displacement "
            f"{1000 * peak:.0f} um in a field {1000 * field_mm:.0f} um high): the gate-open frames of one scan may "
            "leave gaps in angle too wide for a reference; fit the session's tomograms together "
            "(estimate_respiratory_motion with their breaths numbered apart) or reconstruct the gate-open frames")
