"""Automatic centre of rotation: 0/180 registration, refined by a sharpness metric.

1. Registration: a projection and its partner half a turn later (the pairs whose
   angles differ by 180 deg most closely) are mirror images about the axis. The
   mirrored partner is cross-correlated with the first along the columns (all rows;
   sub-pixel peak by a parabola): shift d, axis = (cols - 1 + d) / 2, the median over
   up to ``MAX_PAIRS`` pairs. Without such pairs the detector centre is the start.
2. Refinement: slices are reconstructed from the first half turn of projections for
   axis positions every ``step_px`` within ``search_px`` of that start. A wrong axis
   bends every edge of a half-turn reconstruction into arcs with negative undershoots,
   so the slice's negative mass (relative to its absolute mass, inside the inscribed
   circle) is smallest at the true axis; a parabola through the smallest value and its
   neighbours gives the axis to a fraction of the step.

   Noise biases any such metric: where it exceeds the artifacts, the negative mass
   becomes linear in them and its minimum moves (measured: 0.5 px on the simulated
   tiny leg at 0.1 s exposure). Hence the search reconstructs, for a parallel beam,
   the sum of the middle half of the detector rows (one slice of the summed object,
   sqrt(rows) less noise; the axis is the same), with a Hann window cut at half the
   Nyquist frequency. (Over a full turn a wrong axis only doubles edges symmetrically,
   which is why the half turn is used.) A cone beam is searched on its most structured
   slices instead (rows cannot be summed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .algorithms import FilterSpec, as_projections, reconstruct
from .geometry import ConeGeometry, Geometry, ParallelGeometry, VolumeGrid

MAX_PAIRS = 16
REFINE_SLICES = 3
"""Slices a cone-beam search reconstructs."""


@dataclass(frozen=True)
class CorResult:
    """The axis column found, the registration's estimate, and the metric at each candidate."""

    cor: float
    registration: float | None
    candidates: np.ndarray
    metric: np.ndarray


def _parabola_vertex(values: np.ndarray, i: int) -> float:
    """Sub-sample offset of the extremum of a parabola through values[i - 1 .. i + 1]."""
    if i <= 0 or i >= len(values) - 1:
        return 0.0
    a, b, c = values[i - 1], values[i], values[i + 1]
    denominator = a - 2 * b + c
    return 0.0 if denominator == 0 else float(np.clip(0.5 * (a - c) / denominator, -0.5, 0.5))


def opposite_pairs(angles_deg: np.ndarray, tolerance_deg: float) -> list[tuple[int, int]]:
    """Index pairs whose angles differ by 180 deg within ``tolerance_deg``, best matched first."""
    difference = np.mod(angles_deg[None, :] - angles_deg[:, None] - 180.0, 360.0)
    mismatch = np.minimum(difference, 360.0 - difference)
    partner = np.argmin(mismatch, axis=1)
    best = mismatch[np.arange(angles_deg.size), partner]
    order = np.argsort(best, kind="stable")
    return [(int(i), int(partner[i])) for i in order if best[i] <= tolerance_deg][:MAX_PAIRS]


def register_opposite(line_integrals: torch.Tensor, angles_deg: np.ndarray) -> float | None:
    """Axis column from mirrored opposite projections; None without a pair within 1.5 angular steps."""
    steps = np.diff(np.sort(np.mod(angles_deg, 360.0)))
    tolerance = 1.5 * float(np.median(steps[steps > 0])) if np.any(steps > 0) else 0.0
    pairs = opposite_pairs(angles_deg, tolerance)
    if not pairs:
        return None
    cols = line_integrals.shape[-1]
    length = 2 * cols
    estimates = []
    for i, j in pairs:
        first = line_integrals[i] - line_integrals[i].mean()
        mirrored = torch.flip(line_integrals[j], dims=[-1])
        mirrored = mirrored - mirrored.mean()
        spectrum = torch.conj(torch.fft.rfft(mirrored, n=length)) * torch.fft.rfft(first, n=length)
        correlation = torch.fft.irfft(spectrum.sum(dim=0), n=length).cpu().numpy()
        correlation = np.roll(correlation, cols)  # lag -cols .. cols - 1
        peak = int(np.argmax(correlation))
        lag = peak - cols + _parabola_vertex(correlation, peak)
        estimates.append((cols - 1 + lag) / 2)
    return float(np.median(estimates))


def negativity(image: torch.Tensor) -> float:
    """Negative mass of the slices relative to their absolute mass (0 for a consistent non-negative slice)."""
    return float(image.clamp(max=0).abs().sum() / image.abs().sum().clamp_min(1e-12))


def half_turn(angles_deg: np.ndarray, fan_deg: float = 0.0) -> np.ndarray:
    """Indices of the projections within 180 deg + the fan angle (plus half a step) of the first angle."""
    relative = angles_deg - angles_deg.min()
    steps = np.diff(np.sort(angles_deg))
    step = float(np.median(steps)) if steps.size else 0.0
    return np.flatnonzero(relative < 180.0 + fan_deg + 0.5 * step)


def _structured_rows(line_integrals: torch.Tensor) -> torch.Tensor:
    """The ``REFINE_SLICES`` most structured rows of the middle half of the detector."""
    rows = line_integrals.shape[1]
    middle = torch.arange(rows // 4, rows - rows // 4) if rows >= 4 else torch.arange(rows)
    spread = line_integrals[:, middle.to(line_integrals.device)].std(dim=(0, 2))
    return middle[torch.argsort(spread.cpu(), descending=True)[:REFINE_SLICES]].sort().values


class _SliceScorer:
    """Negative mass of a few half-turn slices, reconstructed for a trial axis column."""

    def __init__(self, projections: torch.Tensor, geometry: Geometry, algorithm: str, filter: FilterSpec,
                 device: torch.device | str) -> None:
        fan = math.degrees(2 * geometry.half_fan_angle_rad()) if isinstance(geometry, ConeGeometry) else 0.0
        half = half_turn(geometry.angles_array, fan)
        projections = projections[torch.as_tensor(half, device=projections.device)]
        geometry = geometry.with_angles(geometry.angles_array[half])
        if isinstance(geometry, ConeGeometry):  # cone slices need every row: chosen slices of the whole volume
            rows = _structured_rows(projections)
            grid = geometry.default_volume()
            z = (rows.double() - geometry.central_row) * geometry.sample_pixel_mm
            self.volumes = [VolumeGrid((1, grid.shape[1], grid.shape[2]), grid.voxel_mm, (0.0, 0.0, float(v)))
                            for v in z]
            self.data, self.geometry = projections, geometry
        else:
            quarter = geometry.rows // 4 if geometry.rows >= 4 else 0
            middle = slice(quarter, geometry.rows - quarter)
            self.data = projections[:, middle].sum(dim=1, keepdim=True)
            self.volumes = [VolumeGrid((1, geometry.cols, geometry.cols), geometry.pixel_mm)]
            self.geometry = ParallelGeometry(geometry.angles_deg, 1, geometry.cols, geometry.pixel_mm)
        self.algorithm, self.filter, self.device = algorithm, filter, device

    def __call__(self, cor: float) -> float:
        trial = self.geometry.with_cor(float(cor))
        with torch.no_grad():
            slices = torch.cat([reconstruct(self.data, trial, v, algorithm=self.algorithm, filter=self.filter,
                                            device=self.device) for v in self.volumes])
        return negativity(_inscribed(slices))


SEARCH_FILTER = FilterSpec("hann", 0.5)


def find_cor(line_integrals: np.ndarray | torch.Tensor, geometry: Geometry, *, search_px: float = 3.0,
             step_px: float = 0.25, filter: FilterSpec = SEARCH_FILTER,
             device: torch.device | str = "cpu") -> CorResult:
    """The detector column of the rotation axis (see module docstring).

    Without opposite pairs the search first scans +-cols/8 around the detector centre
    in steps of 1 px.
    """
    projections = as_projections(line_integrals, geometry, device)
    start = register_opposite(projections, geometry.angles_array)
    algorithm = "fdk" if isinstance(geometry, ConeGeometry) else "fourier"
    score = _SliceScorer(projections, geometry, algorithm, filter, device)
    centre = start
    if centre is None:
        coarse = float(geometry.cor_value()) + np.arange(-(geometry.cols // 8), geometry.cols // 8 + 1, 1.0)
        centre = float(coarse[int(np.argmin([score(c) for c in coarse]))])
    candidates = centre + np.arange(-search_px, search_px + step_px / 2, step_px)
    metric = np.array([score(c) for c in candidates])
    best = int(np.argmin(metric))
    cor = float(candidates[best] + step_px * _parabola_vertex(metric, best))
    return CorResult(cor, start, candidates, metric)


def _inscribed(slices: torch.Tensor) -> torch.Tensor:
    """Slices with everything outside the inscribed circle (seen at every angle) set to 0."""
    _, ny, nx = slices.shape
    y = torch.arange(ny, device=slices.device) - (ny - 1) / 2
    x = torch.arange(nx, device=slices.device) - (nx - 1) / 2
    inside = (x[None, :] ** 2 + y[:, None] ** 2) <= (min(nx, ny) / 2 - 1) ** 2
    return slices * inside

