"""The online reconstruction's geometry, from a run's start document and the [recon] settings.

The start document's ``geometry`` (docs/documents.md) gives the beam, the detector and
its pixel; its ``scan`` gives the planned angle grid of one tomogram. Projections are
binned by the smallest whole factor that brings them within ``online_max_pixels``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ReconConfig
from ..documents import DocumentContractError
from ..recon import ConeGeometry, ParallelGeometry
from ..recon.geometry import Geometry
from .tomogram import Grid


@dataclass(frozen=True)
class OnlineSetup:
    """What the online reconstruction of a run is: binned geometry with the planned angles, grid, algorithm.

    ``grid`` runs upwards whichever way the plan sweeps; slot i is its angle i.
    """

    geometry: Geometry
    grid: Grid
    binning: int
    algorithm: str
    gating: str

    def slot(self, angles_deg: np.ndarray) -> np.ndarray:
        """The planned angle each measured angle stands for; -1 off the grid.

        Plans shift a grid by whole turns to where the stage is, and a continuous series
        flies one grid span after the other, so angles are first taken modulo 360 deg,
        then modulo the span when the span divides the turn (180 deg, 360 deg, ...).
        Either sweep direction maps onto the same slots.
        """
        step = self.grid.step_deg
        index = np.rint(np.mod(np.asarray(angles_deg, float) - self.grid.start_deg, 360.0) / step).astype(np.int64)
        turns = 360.0 / (step * self.grid.count)
        if abs(turns - round(turns)) < 1e-6:
            return np.mod(index, self.grid.count)
        index = np.where(index == round(360.0 / step), 0, index)  # just below a whole turn from the start
        return np.where(index < self.grid.count, index, -1)


def _number(section: Mapping[str, Any], name: str, key: str) -> float:
    try:
        value = float(section[key])
    except (KeyError, TypeError, ValueError):
        raise DocumentContractError(f"the start document's {name!r} lacks a number {key!r}, which the online "
                                    "reconstruction needs (docs/documents.md)") from None
    if not math.isfinite(value):
        raise DocumentContractError(f"the start document's {name}.{key} is {value}; it must be finite")
    return value


def online_setup(start: Mapping[str, Any], settings: ReconConfig) -> OnlineSetup:
    """The geometry to reconstruct a run with; raises DocumentContractError naming what the start lacks."""
    geometry, scan = start.get("geometry"), start.get("scan")
    if not isinstance(geometry, Mapping) or not isinstance(scan, Mapping):
        raise DocumentContractError("the start document lacks 'geometry' or 'scan': the online reconstruction "
                                    "needs both (the tomography plans record them)")
    cols = int(_number(geometry, "geometry", "cols"))
    rows = int(_number(geometry, "geometry", "rows"))
    binning = max(1, math.ceil(cols / settings.online_max_pixels))
    rows_b, cols_b = rows // binning, cols // binning
    count = int(_number(scan, "scan", "projections"))
    start_deg, range_deg = _number(scan, "scan", "start_deg"), _number(scan, "scan", "range_deg")
    grid = Grid(min(start_deg, start_deg + range_deg), abs(range_deg) / count, count)  # ascending
    plan = grid.start_deg + grid.step_deg * np.arange(count)
    pixel_mm = _number(geometry, "geometry", "detector_pixel_um") * 1e-3 * binning
    cor = (cols_b - 1) / 2 + settings.online_cor_offset_px / binning
    if geometry.get("type") == "cone":
        beam: Geometry = ConeGeometry(plan, rows_b, cols_b, pixel_mm, _number(geometry, "geometry", "source_sample_mm"),
                                      _number(geometry, "geometry", "source_detector_mm"), cor=cor)
        algorithm = "fdk"
    else:
        magnification = _number(geometry, "geometry", "magnification")
        beam = ParallelGeometry(plan, rows_b, cols_b, pixel_mm / magnification, cor=cor)
        algorithm = settings.online_algorithm
    return OnlineSetup(beam, grid, binning, algorithm, str(scan.get("gating", "none")))
