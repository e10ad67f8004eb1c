"""Geometry self-calibration and rigid motion correction through the known operators, against the phantom's truth.

Calibration: a cone-beam scan (``--rows`` x ``--cols`` detector, ``--angles`` over 360 deg,
SOD 25 mm, SDD 125 mm, the detector 24 mm wide) of the 3D Shepp-Logan phantom stretched to
the detector's height, with exact line integrals (2 x 2 rays per pixel), taken with the
axis 3.3 px (of 48 columns; scaled with the columns) right of the detector centre and the
detector tilted 0.4 deg; the start geometry has the axis at the centre, no tilt and the
distance 2 % too long (``--distance-error``). Calibrated as ``nanoscope recon --calibrate
cor,tilt,distance`` does (self_calibration.py, default settings): axis and tilt by the
descent on the scan binned to at most 64 columns and 90 angles, then the distance (and the
axis with it) from the full-size scan's conjugate rays; compared with find_cor (axis
only). Reconstruction error: FDK RMSE against the rasterised phantom on the start's grid.

Distance scaling (``distance``): the conjugate-ray distance alone on the rows around the
mid-plane (its tilted trace and 2 more on each side) of the same scan at several detector
widths and angle counts, the axis starting 0.05 px off, the tilt known.

Motion: a parallel-beam scan (16 x 48 px, 60 angles over 180 deg) in which the specimen
either jumps by 2.5 px across and 1.5 px along the axis after a third of the scan and by -4
px across after two thirds (``jumps``), or breathes, ungated: 4 breaths during the scan,
each a 2 px lift along the axis and 1 px across shaped sin^4 (short breaths, pauses
between; ``breathing``); the error of the estimated shifts (less what a translation of the
whole specimen causes) and the RMSE against the motion-free reconstruction before and after.

Usage: python benchmarks/bench_known_operators.py [--skip calibration distance jumps breathing] [--evaluations 30]
Writes benchmarks/results/bench_known_operators.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from nanoscope_daq.config import load_config
from nanoscope_daq.recon import ConeGeometry, ParallelGeometry, find_cor, reconstruct
from nanoscope_daq.recon.conjugate_rays import calibrate_distance
from nanoscope_daq.recon.geometry import Geometry, VolumeGrid
from nanoscope_daq.recon.motion import estimate_motion, reconstruct_with_motion, unobservable_removed
from nanoscope_daq.recon.phantoms import Ellipsoids, project_ellipsoids, rasterise_ellipsoids, shepp_logan_3d
from nanoscope_daq.recon.self_calibration import self_calibrate

RESULTS = Path(__file__).parent / "results" / "bench_known_operators.json"


def _rmse(data: np.ndarray, geometry: Geometry, volume: VolumeGrid, exact: np.ndarray, **options) -> float:
    with torch.no_grad():
        image = reconstruct(data, geometry, volume, **options).numpy()
    return round(float(np.sqrt(np.mean((image - exact) ** 2))), 5)


def _phantom(rows: int, cols: int, pixel_mm: float) -> Ellipsoids:
    return shepp_logan_3d(0.42 * cols * pixel_mm, 1.0, 0.40 * rows * pixel_mm)


DETECTOR_MM = 24.0
"""Width of the calibration scan's detector (48 pixels of 0.5 mm at the first size measured)."""
DISTANCE_SIZES = ((48, 360), (64, 720), (96, 720), (192, 900), (512, 900), (2048, 900))
"""(columns, angles) of the distance-scaling runs; the instrument turns 720-900 projections, 2048 columns."""


def cone_scan(rows: int, cols: int, angles: int, distance_error: float) -> tuple[ConeGeometry, ConeGeometry]:
    """The true geometry and the start (module docstring)."""
    angles_deg = np.linspace(0, 360, angles, endpoint=False)
    pixel_mm = DETECTOR_MM / cols
    true = ConeGeometry(angles_deg, rows, cols, pixel_mm, 25.0, 125.0, cor=(cols - 1) / 2 + 3.3 * cols / 48,
                        tilt_deg=0.4)
    return true, ConeGeometry(angles_deg, rows, cols, pixel_mm, 25.0, 125.0 * (1 + distance_error))


def calibration(rows: int, cols: int, angles: int, distance_error: float, evaluations: int) -> dict:
    true, start = cone_scan(rows, cols, angles, distance_error)
    phantom = _phantom(rows, cols, true.sample_pixel_mm)
    data = project_ellipsoids(phantom, true, 2)
    volume = start.default_volume()
    exact = rasterise_ellipsoids(phantom, volume, 2)
    began = time.perf_counter()
    axis = find_cor(data, start)
    cor_seconds = time.perf_counter() - began
    parameters = ("cor", "tilt", "distance") if distance_error else ("cor", "tilt")
    settings = dataclasses.replace(load_config(environment=False).recon, calibration_evaluations=evaluations)
    began = time.perf_counter()
    found = self_calibrate(data, start, parameters, None, settings)
    seconds = time.perf_counter() - began
    record = found.record()
    estimate = record["calibration"]["estimate"]
    calibrated = found.geometry
    row = {
        "detector": [rows, cols], "angles": angles, "parameters": list(parameters), "binning": found.binning,
        "truth": {"cor": true.cor, "tilt": 0.4, "distance": 125.0},
        "start": record["calibration"]["start"], "estimate": estimate,
        "error": {"cor_px": float(calibrated.cor_value()) - true.cor, "tilt_deg": float(calibrated.tilt_deg) - 0.4,
                  "distance_pct": 100 * (calibrated.source_detector_mm / 125.0 - 1)},
        "descent_cor_error_px": record["calibration"]["distance"]["cor"][0] - true.cor if distance_error else None,
        "find_cor_error_px": axis.cor - true.cor, "find_cor_seconds": cor_seconds,
        "objective": [found.calibration.objective_start, found.calibration.objective],
        "evaluations": found.calibration.evaluations, "descent_seconds": found.calibration.seconds,
        "distance": record["calibration"].get("distance"), "seconds": seconds,
        "rmse": {"true geometry": _rmse(data, true, volume, exact), "start": _rmse(data, start, volume, exact),
                 "find_cor": _rmse(data, start.with_cor(axis.cor), volume, exact),
                 "calibrated": _rmse(data, calibrated, volume, exact)},
    }
    print(json.dumps(row, indent=1), flush=True)
    return row


def distance_scaling(distance_error: float) -> list[dict]:
    """The conjugate-ray distance alone at each of ``DISTANCE_SIZES`` (module docstring)."""
    out = []
    for cols, angles in DISTANCE_SIZES:
        rows = 4 + 2 * math.ceil(cols / 2 * math.tan(math.radians(0.4)))  # the tilted mid-plane's trace, and 2 more
        true, _ = cone_scan(rows, cols, angles, distance_error)
        start = dataclasses.replace(true, source_detector_mm=125.0 * (1 + distance_error), cor=true.cor + 0.05)
        data = project_ellipsoids(_phantom(cols, cols, true.sample_pixel_mm), true, 2)  # mid rows of a square scan
        found = calibrate_distance(data, start)
        row = {"cols": cols, "rows": rows, "angles": angles,
               "distance_error_pct": 100 * (found.distance_mm / 125.0 - 1),
               "cor_error_px": found.cor - true.cor, "columns_compared": found.columns,
               "evaluations": found.evaluations, "seconds": found.seconds}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def injected_motion(kind: str, angles: int, pixel_mm: float) -> np.ndarray:
    """Shifts (angles, 3) mm of the ``jumps`` or ``breathing`` case (module docstring)."""
    shifts = np.zeros((angles, 3))
    if kind == "jumps":
        shifts[angles // 3:, 0], shifts[angles // 3:, 2] = 2.5 * pixel_mm, 1.5 * pixel_mm
        shifts[2 * angles // 3:, 0] -= 4 * pixel_mm
    else:
        breath = np.sin(np.pi * 4 * np.arange(angles) / angles) ** 4
        shifts[:, 0], shifts[:, 2] = 1.0 * pixel_mm * breath, 2.0 * pixel_mm * breath
    return shifts


def motion(kind: str, evaluations: int) -> dict:
    geometry = ParallelGeometry(np.linspace(0, 180, 60, endpoint=False), 16, 48, 0.1)
    phantom = _phantom(16, 48, 0.1)
    shifts = injected_motion(kind, 60, geometry.pixel_mm)
    data = project_ellipsoids(phantom, geometry, 2, shifts)
    theta = torch.deg2rad(torch.tensor(geometry.angles_array, dtype=torch.float64))
    observable = np.insert(unobservable_removed(torch.tensor(shifts[:, [0, 2]]), theta).numpy(), 1, 0, axis=1)
    volume = geometry.default_volume()
    with torch.no_grad():
        still = reconstruct(project_ellipsoids(phantom, geometry, 2, shifts - observable), geometry, volume).numpy()
    result = estimate_motion(data, geometry, evaluations=evaluations)
    error_px = (result.shifts_mm - observable)[:, [0, 2]] / geometry.pixel_mm
    with torch.no_grad():
        corrected = reconstruct_with_motion(data, geometry, result, volume).numpy()
    row = {
        "scan": f"parallel 16 x 48 px, 60 angles / 180 deg; {kind}",
        "shift_error_px": {"rms": float(np.sqrt(np.mean(error_px**2))), "max": float(np.abs(error_px).max())},
        "rmse_vs_motion_free": {"uncorrected": _rmse(data, geometry, volume, still),
                                "corrected": round(float(np.sqrt(np.mean((corrected - still) ** 2))), 5),
                                "true shifts": _rmse(data, geometry, volume, still,
                                                     shifts_mm=torch.tensor(observable).float())},
        "objective": [result.objective_start, result.objective], "evaluations": result.evaluations,
        "seconds": result.seconds,
    }
    print(json.dumps(row, indent=1), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=192)
    parser.add_argument("--cols", type=int, default=96)
    parser.add_argument("--angles", type=int, default=720)
    parser.add_argument("--distance-error", type=float, default=0.02)
    parser.add_argument("--evaluations", type=int, default=30)
    parser.add_argument("--skip", nargs="*", default=[], choices=["calibration", "distance", "jumps", "breathing"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {"machine": {"torch": torch.__version__, "cores": os.cpu_count(), "torch_threads": 1,
                                 "load_average_before": list(os.getloadavg())}}
    if "calibration" not in args.skip:
        results["calibration"] = calibration(args.rows, args.cols, args.angles, args.distance_error, args.evaluations)
    if "distance" not in args.skip:
        results["distance scaling"] = distance_scaling(args.distance_error or 0.02)
    for kind in ("jumps", "breathing"):
        if kind not in args.skip:
            results[f"motion ({kind})"] = motion(kind, args.evaluations // 2)
    results["machine"]["load_average_after"] = list(os.getloadavg())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
