"""Self-calibration of a whole scan: geometry and motion estimated on a binned copy, mapped back to full size.

Calibration (calibrate.py) and motion estimation (motion.py) reconstruct and reproject
the scan tens of times, so they run on the line integrals binned by the smallest whole
factor that brings the detector to ``calibration_max_pixels`` columns (mean of b x b
pixels; the geometry's pixel is b times larger and its columns map as col_b = (col -
(b - 1) / 2) / b). The geometry calibration also keeps only every k-th projection, at
most ``calibration_max_angles``; motion needs every projection. Axis, detector offset
map back to full-size columns; tilt, roll and distance are the same at every binning;
shifts are in mm. The distance is calibrated after the rest, from the conjugate rays of
the full-size scan's mid-plane (conjugate_rays.py: one row of every projection, cheap,
and its precision grows with the columns and angles), with the axis column refined with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import ReconConfig
from .calibrate import CalibrationResult, calibrate_geometry, check_parameters
from .conjugate_rays import DistanceCalibration, calibrate_distance
from .errors import ReconInputError
from .geometry import ConeGeometry, Geometry
from .motion import MotionResult, estimate_motion
from .respiratory_motion import BreathingModel, estimate_respiratory_motion

MOTION_MODELS = ("rigid", "respiratory")
"""``rigid``: a translation per projection (motion.py); ``respiratory``: the breath driven by the recorded
respiratory phase (respiratory_motion.py)."""


@dataclass(frozen=True)
class SelfCalibration:
    """The full-size geometry after calibration, the shifts (angles, 3, mm) or None, and what was found (the
    descent's calibration on the binned scan, the distance's on the full-size one)."""

    geometry: Geometry
    shifts_mm: np.ndarray | None
    calibration: CalibrationResult | None
    motion: MotionResult | None
    binning: int
    breathing: BreathingModel | None = None
    distance: DistanceCalibration | None = None

    def record(self) -> dict:
        """The provenance record: parameters before/after (full size), objective, evaluations, time, binning, the
        distance's conjugate-ray fit, shifts' size."""
        out: dict = {"binning": self.binning}
        if self.calibration is not None or self.distance is not None:
            start, estimate, c = {}, {}, self.calibration
            if c is not None:
                start, estimate = _full_size(c.start, self.binning), _full_size(c.estimate, self.binning)
                out["calibration"] = {"objective": [c.objective_start, c.objective], "evaluations": c.evaluations,
                                      "seconds": round(c.seconds, 2)}
            if self.distance is not None:
                d = self.distance
                start["distance"], estimate["distance"] = d.distance_start_mm, d.distance_mm
                if "cor" in estimate:
                    estimate["cor"] = d.cor
                out.setdefault("calibration", {})["distance"] = d.record()
            out["calibration"].update(start=start, estimate=estimate)
        if self.motion is not None:
            m = self.motion
            out["motion"] = {"rms_shift_mm": float(np.sqrt(np.mean(m.shifts_mm**2))),
                             "max_shift_mm": float(np.abs(m.shifts_mm).max()),
                             "objective": [m.objective_start, m.objective], "evaluations": m.evaluations,
                             "seconds": round(m.seconds, 2),
                             "model": "rigid" if self.breathing is None else "respiratory"}
            if self.breathing is not None:
                out["motion"]["breathing"] = self.breathing.record()
        return out


def binned(line_integrals: np.ndarray, geometry: Geometry, factor: int) -> tuple[np.ndarray, Geometry]:
    """Line integrals and geometry with b x b pixels averaged (the last rows and columns that do not fill a bin
    dropped)."""
    if factor == 1:
        return np.asarray(line_integrals), geometry
    rows, cols = geometry.rows // factor, geometry.cols // factor
    data = np.asarray(line_integrals)[:, :rows * factor, :cols * factor]
    data = data.reshape(data.shape[0], rows, factor, cols, factor).mean(axis=(2, 4))
    changes: dict = {"rows": rows, "cols": cols, "pixel_mm": geometry.pixel_mm * factor,
                     "cor": _to_binned(float(geometry.cor_value()), factor)}
    if isinstance(geometry, ConeGeometry):
        central = (_to_binned(geometry.central_col, factor), _to_binned(geometry.central_row, factor))
        changes["detector_offset_px"] = (central[0] - (cols - 1) / 2, central[1] - (rows - 1) / 2)
    return data.astype(np.float32), replace(geometry, **changes)


def calibration_binning(geometry: Geometry, settings: ReconConfig) -> int:
    """The smallest whole factor that brings the detector to ``calibration_max_pixels`` columns."""
    return max(1, math.ceil(geometry.cols / settings.calibration_max_pixels))


def _to_binned(column: float, factor: int) -> float:
    return (column - (factor - 1) / 2) / factor


def _from_binned(column: float, factor: int) -> float:
    return column * factor + (factor - 1) / 2


def _full_size(estimate: dict[str, float], factor: int) -> dict[str, float]:
    """Calibrated parameters of the binned geometry as full-size values (axis column)."""
    return {name: _from_binned(value, factor) if name == "cor" else value for name, value in estimate.items()}


def self_calibrate(line_integrals: np.ndarray, geometry: Geometry, parameters: tuple[str, ...], motion: str | None,
                   settings: ReconConfig, device: torch.device | str = "cpu",
                   respiration: tuple[np.ndarray, np.ndarray] | None = None) -> SelfCalibration:
    """Calibrate ``parameters`` of ``geometry`` (the start) and estimate the specimen's ``motion`` (one of
    ``MOTION_MODELS``, or None); full size out. ``respiration``: each projection's respiratory phase and gate,
    needed by the ``respiratory`` model."""
    if parameters:
        check_parameters(parameters, geometry)
    if motion is not None and motion not in MOTION_MODELS:
        raise ReconInputError(f"unknown motion model {motion!r}; choose from: {', '.join(MOTION_MODELS)}")
    if motion == "respiratory" and respiration is None:
        raise ReconInputError("the respiratory motion model needs each projection's respiratory phase and gate")
    factor = calibration_binning(geometry, settings)
    data, small = binned(line_integrals, geometry, factor)
    calibration, distance = None, None
    descended = tuple(name for name in parameters if name != "distance")
    if descended:
        every = max(1, math.ceil(geometry.num_angles / settings.calibration_max_angles))
        subset = small.with_angles(small.angles_array[::every])
        calibration = calibrate_geometry(data[::every], subset, descended,
                                         evaluations=settings.calibration_evaluations, device=device)
        small = replace(calibration.geometry, angles_deg=small.angles_deg)
        geometry = _full_geometry(geometry, calibration.geometry, factor)
    if "distance" in parameters:
        distance = calibrate_distance(line_integrals, geometry)
        geometry = distance.applied(geometry, refine_axis="cor" in parameters)
        small = replace(small, source_detector_mm=geometry.source_detector_mm,
                        cor=_to_binned(float(geometry.cor_value()), factor))
    found, breathing = None, None
    if motion == "rigid":
        found = estimate_motion(data, small, evaluations=settings.calibration_evaluations, device=device)
    elif motion == "respiratory":
        found, breathing = estimate_respiratory_motion(data, small, *respiration,
                                                       evaluations=settings.calibration_evaluations, device=device)
    return SelfCalibration(geometry, None if found is None else found.shifts_mm, calibration, found, factor,
                           breathing, distance)


def _full_geometry(full: Geometry, calibrated: Geometry, factor: int) -> Geometry:
    """``full`` with the calibrated binned geometry's axis, tilt, roll, distance and detector offset."""
    changes: dict = {"cor": _from_binned(float(calibrated.cor_value()), factor),
                     "tilt_deg": float(calibrated.tilt_deg)}
    if isinstance(full, ConeGeometry) and isinstance(calibrated, ConeGeometry):
        central = (_from_binned(float(calibrated.central_col), factor),
                   _from_binned(float(calibrated.central_row), factor))
        changes.update(roll_deg=float(calibrated.roll_deg), source_detector_mm=float(calibrated.source_detector_mm),
                       detector_offset_px=(central[0] - (full.cols - 1) / 2, central[1] - (full.rows - 1) / 2))
    return replace(full, **changes)
