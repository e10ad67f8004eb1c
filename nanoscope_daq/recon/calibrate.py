"""Geometry self-calibration: the scan's geometry estimated from its own projections by gradient descent.

Objective: reprojection consistency. For a trial geometry g, the projections p are
reconstructed by FBP / FDK with g, the volume is projected again through g (projector.py),
and the mismatch

    J(g) = sum_{angles, rows in the middle} (A_g FBP_g p - p)^2 / sum p^2

is minimised over the chosen parameters, both sides blurred by a Gaussian of
``smoothing_px`` (1 px: most of the mismatch from resolution alone -- interpolation in the
two operators -- goes, which otherwise biases parameters that move structure by
fractions of a pixel). Why this objective: with the right geometry
every ray of the data is explained by one volume (A FBP p = p up to FBP's resolution);
a wrong axis, tilt or distance places the same structure at inconsistent positions in
different projections, FBP smears it into arcs and doubled edges, and their reprojection
no longer matches the data -- in every projection, not only at 0/180 pairs, and for any
parameter the projector models, so one objective serves the axis, the detector's tilt
and roll, the source-detector distance and the detector offset alike. It needs no
opposite projections, and its gradient in every parameter comes from torch's autograd
through the same operators used to reconstruct (known operators). It is smooth in the
parameters (bilinear sampling), so L-BFGS with a strong-Wolfe line search converges in
a few tens of evaluations.

The axis needs a full turn: over a half turn (parallel beam, 180 deg) a shifted axis is
partly absorbed by the reconstruction (the projections' centroids need only follow a
sinusoid plus a constant over half a period), and the minimum of J sits 0.1-0.2 px off
(measured on a 64 x 32 px, 60-angle scan); such scans keep find_cor's axis.

Only the middle ``ROW_FRACTION`` of detector rows are compared: rays near the top and
bottom of a cone beam cross voxels that FDK sees from only part of the turn.

The distance is not calibrated by this objective: at the sizes measured a 2 % error moves
rays by less than FDK's own cone-beam approximation and the operators' position-dependent
resolution change the mismatch, and J falls monotonically with a longer distance
(docs/recon.md). ``distance`` is calibrated after the descent (which then covers the other
parameters) from the fan-beam conjugate rays of the mid-plane (conjugate_rays.py), which
compares measured line integrals with measured ones and involves no reconstruction; that
fit refines the axis column with it, which replaces the descent's axis when ``cor`` is
calibrated too.

Parameters (``PARAMETERS``): ``cor`` (px), ``tilt`` (deg), ``roll`` (deg, cone beam),
``distance`` (source-detector distance SDD, mm, with the source-axis distance SOD
known), ``offset_col``, ``offset_row`` (where the central ray meets the detector, px, cone beam).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import CALIBRATION_PARAMETERS
from .algorithms import RAM_LAK, FilterSpec, angles_rad, as_projections, direct_algorithm, reconstruct
from .conjugate_rays import DistanceCalibration, calibrate_distance, check_conjugate_rays
from .errors import ReconInputError
from .geometry import ConeGeometry, Geometry, VolumeGrid
from .projector import forward_project
from .weights import is_full_rotation, projection_weights

PARAMETERS = CALIBRATION_PARAMETERS
CONE_ONLY = ("roll", "distance", "offset_col", "offset_row")
ROW_FRACTION = 0.75


@dataclass(frozen=True)
class CalibrationResult:
    """The calibrated geometry, the parameters before and after (natural units), the objective before and after,
    and the distance's conjugate-ray calibration (None when the distance was not calibrated)."""

    geometry: Geometry
    start: dict[str, float]
    estimate: dict[str, float]
    objective_start: float
    objective: float
    evaluations: int
    seconds: float
    distance: DistanceCalibration | None = None


def check_parameters(parameters: tuple[str, ...], geometry: Geometry) -> tuple[str, ...]:
    """The parameters, refused when unknown or not seen in this geometry."""
    for name in parameters:
        if name not in PARAMETERS:
            raise ReconInputError(f"unknown calibration parameter {name!r}; choose from: {', '.join(PARAMETERS)}")
        if name in CONE_ONLY and not isinstance(geometry, ConeGeometry):
            raise ReconInputError(f"calibration parameter {name!r} exists only for a cone beam; drop it for "
                                  "parallel-beam data")
    if not parameters:
        raise ReconInputError(f"nothing to calibrate: name at least one of {', '.join(PARAMETERS)}")
    if "cor" in parameters and not is_full_rotation(geometry.angles_array):
        raise ReconInputError("calibrating the axis ('cor') needs a full turn of projections: over a half turn the "
                              "data absorb part of an axis shift (measured: the minimum 0.1-0.2 px off); leave 'cor' "
                              "out, the axis from find_cor (or --cor) is kept")
    if "distance" in parameters:
        check_conjugate_rays(geometry)
    return tuple(parameters)


def parameter_values(geometry: Geometry) -> dict[str, float]:
    """Every calibration parameter's value in ``geometry`` (natural units; distance in mm)."""
    values = {"cor": float(geometry.cor_value()), "tilt": float(geometry.tilt_deg)}
    if isinstance(geometry, ConeGeometry):
        values.update(roll=float(geometry.roll_deg), distance=float(geometry.source_detector_mm),
                      offset_col=float(geometry.detector_offset_px[0]),
                      offset_row=float(geometry.detector_offset_px[1]))
    return values


def with_parameters(geometry: Geometry, values: dict[str, float | torch.Tensor]) -> Geometry:
    """``geometry`` with the given parameters (natural units) replaced; tensors keep their gradient."""
    changes: dict[str, object] = {}
    if "cor" in values:
        changes["cor"] = values["cor"]
    if "tilt" in values:
        changes["tilt_deg"] = values["tilt"]
    if "roll" in values:
        changes["roll_deg"] = values["roll"]
    if "distance" in values:
        changes["source_detector_mm"] = values["distance"]
    if "offset_col" in values or "offset_row" in values:
        col, row = geometry.detector_offset_px
        changes["detector_offset_px"] = (values.get("offset_col", col), values.get("offset_row", row))
    if isinstance(geometry, ConeGeometry) and "cor" not in values and geometry.cor is None:
        changes["cor"] = float(geometry.cor_value())  # the axis stays where it is when the offset moves
    return replace(geometry, **changes)


def middle_rows(rows: int) -> slice:
    """The middle ``ROW_FRACTION`` of the detector rows (all rows of a short detector)."""
    margin = int(rows * (1 - ROW_FRACTION) / 2)
    return slice(margin, rows - margin) if rows - 2 * margin >= 1 else slice(0, rows)


class ReprojectionConsistency:
    """J(g) of the module docstring for one data set, as a function of the calibration parameters."""

    def __init__(self, projections: torch.Tensor, geometry: Geometry, volume: VolumeGrid, filter: FilterSpec,
                 reprojected_angles: int, shifts_mm: torch.Tensor | None = None, smoothing_px: float = 1.0,
                 corrections: int = 0) -> None:
        self.smoothing_px = smoothing_px
        self.corrections = corrections
        self.projections, self.geometry, self.volume, self.filter = projections, geometry, volume, filter
        self.algorithm = direct_algorithm(geometry)
        self.weights = projection_weights(geometry, projections.device)
        self.theta = angles_rad(geometry, projections.device)
        step = max(1, geometry.num_angles // reprojected_angles)
        self.subset = torch.arange(0, geometry.num_angles, step, device=projections.device)
        self.rows = middle_rows(geometry.rows)
        self.target = self.smooth(projections[self.subset])[:, self.rows]
        self.norm = float((self.target**2).mean())
        self.shifts_mm = shifts_mm

    def __call__(self, geometry: Geometry, shifts_mm: torch.Tensor | None = None) -> torch.Tensor:
        shifts = self.shifts_mm if shifts_mm is None else shifts_mm
        volume = self.reconstruct(self.projections, geometry, shifts)
        for _ in range(self.corrections):
            residual = self.projections - forward_project(volume, self.volume, geometry, self.theta, shifts)
            volume = volume + self.reconstruct(residual, geometry, shifts)
        subset_shifts = None if shifts is None else shifts[self.subset]
        reprojected = forward_project(volume, self.volume, geometry, self.theta[self.subset], subset_shifts)
        return ((self.smooth(reprojected)[:, self.rows] - self.target) ** 2).mean() / self.norm

    def reconstruct(self, projections: torch.Tensor, geometry: Geometry, shifts: torch.Tensor | None) -> torch.Tensor:
        return reconstruct(projections, geometry, self.volume, algorithm=self.algorithm, filter=self.filter,
                           weights=self.weights, shifts_mm=shifts, device=projections.device)

    def smooth(self, projections: torch.Tensor) -> torch.Tensor:
        """Projections blurred by a Gaussian of ``smoothing_px``."""
        return blurred(projections, self.smoothing_px)


def blurred(projections: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Projections (..., rows, cols) blurred by a Gaussian of ``sigma_px`` (rows and columns; edges repeated)."""
    if sigma_px <= 0:
        return projections
    radius = max(1, math.ceil(3 * sigma_px))
    offsets = torch.arange(-radius, radius + 1, device=projections.device, dtype=projections.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    flat = projections.reshape(-1, 1, *projections.shape[-2:])
    flat = torch.nn.functional.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = torch.nn.functional.conv2d(flat, kernel.reshape(1, 1, 1, -1))
    flat = torch.nn.functional.conv2d(flat, kernel.reshape(1, 1, -1, 1))
    return flat.reshape(projections.shape)


def lbfgs_minimise(variables: torch.Tensor, value: Callable[[], torch.Tensor], evaluations: int,
                   history_size: int = 10) -> int:
    """Minimise ``value()`` over the leaf tensor ``variables`` (in place) by L-BFGS with a strong-Wolfe line search,
    at most ``evaluations`` evaluations; returns how many were made."""
    optimiser = torch.optim.LBFGS([variables], lr=1.0, max_iter=evaluations, max_eval=evaluations,
                                  tolerance_grad=1e-12, tolerance_change=1e-14, history_size=history_size,
                                  line_search_fn="strong_wolfe")
    count = 0

    def closure() -> torch.Tensor:
        nonlocal count
        count += 1
        optimiser.zero_grad()
        result = value()
        result.backward()
        return result

    optimiser.step(closure)
    return count


def calibrate_geometry(line_integrals: np.ndarray | torch.Tensor, geometry: Geometry,
                       parameters: tuple[str, ...] = ("cor", "tilt"), *, volume: VolumeGrid | None = None,
                       filter: FilterSpec = RAM_LAK, evaluations: int = 40,
                       reprojected_angles: int = 30, smoothing_px: float = 1.0, corrections: int = 0,
                       device: torch.device | str = "cpu") -> CalibrationResult:
    """Estimate ``parameters`` of ``geometry`` (the start) from the line integrals (module docstring).

    Every parameter but ``distance`` by the descent; then ``distance`` (and the axis with
    it) from the conjugate rays (conjugate_rays.py), on all the projections given.
    ``volume``: the grid reconstructed and reprojected (default the geometry's own; it must
    hold the whole specimen). ``evaluations``: most objective evaluations by L-BFGS.
    ``reprojected_angles``: how many projections (evenly spread) the objective compares.
    ``smoothing_px``: Gaussian blur of both sides of the comparison (module docstring).
    ``corrections``: iterations x <- x + FBP(p - A x) after FBP; they lower the mismatch
    that resolution leaves but also the geometry's signal (docs/recon.md); default none.
    """
    parameters = check_parameters(parameters, geometry)
    projections = as_projections(line_integrals, geometry, device)
    volume = volume or geometry.default_volume()
    objective = ReprojectionConsistency(projections, geometry, volume, filter, reprojected_angles,
                                        smoothing_px=smoothing_px, corrections=corrections)
    start = parameter_values(geometry)
    descended = tuple(name for name in parameters if name != "distance")
    steps = torch.zeros(len(descended), dtype=torch.float64, requires_grad=True)
    began = time.perf_counter()

    def trial(x: torch.Tensor) -> Geometry:
        return with_parameters(geometry, {name: start[name] + x[i].float() for i, name in enumerate(descended)})

    with torch.no_grad():
        objective_start = float(objective(geometry))
    count = lbfgs_minimise(steps, lambda: objective(trial(steps)), evaluations) if descended else 0
    found = steps.detach()
    calibrated = with_parameters(geometry, {name: start[name] + float(found[i]) for i, name in enumerate(descended)})
    distance = None
    if "distance" in parameters:
        distance = calibrate_distance(projections, calibrated)
        calibrated = distance.applied(calibrated, refine_axis="cor" in parameters)
    with torch.no_grad():
        final = float(objective(calibrated))
    if not math.isfinite(final):
        raise ReconInputError("geometry calibration diverged (objective not finite); start closer to the true "
                              "geometry, e.g. with the axis from find_cor")
    estimate = parameter_values(calibrated)
    return CalibrationResult(calibrated, {k: start[k] for k in parameters}, {k: estimate[k] for k in parameters},
                             objective_start, final, count, time.perf_counter() - began, distance)
