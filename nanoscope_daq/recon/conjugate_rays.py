"""The source-detector distance of a cone-beam scan from fan-beam conjugate rays: no reconstruction involved.

In the mid-plane (the plane through the source perpendicular to the rotation axis) a
full turn measures every line twice. A ray leaves the source at fan angle phi from the
central ray (tan phi = x / SDD, x the lab position of its detector point); with
delta the fan angle of the ray through the rotation axis (tan delta = axis_x / SOD,
the same as (cor - central column) x pixel / SDD), the ray at rotation angle theta and
fan angle phi is the ray at

    theta' = theta + pi + 2 (phi - delta),    phi' = 2 delta - phi,

so the mid-plane sinogram obeys p(theta, phi) = p(theta', phi'). A trial distance maps
columns to fan angles; a wrong one gives each column the wrong angular shift
2 (phi - delta), and the conjugate columns no longer match. The mismatch

    E(SDD, cor) = sum_columns sum_theta (p(theta, col) - p(theta', col'))^2 / sum p^2

is minimised over the distance and the axis column together: a grid over the distance
(``search_fraction``, the axis kept), then Nelder-Mead over both (scipy). The axis is
fitted too because the two are entangled: the conjugate of a column sits near
2 cor - col, so an axis 0.02 px off moves every conjugate as much as a 2 % longer
distance moves the angular shifts at 48 columns (measured: with the axis fixed 0.023 px
off, the distance came out 1.9 % off). Each conjugate column is moved in theta exactly,
by a Fourier phase shift (a full turn is periodic; band-limited interpolation leaves no
bias in theta), and read between detector columns as a pixel: the difference of a cubic
spline through the columns' running sum at the pixels' edges (a detector pixel
integrates over its width, so this reads the conjugate pixel, not a point). Both sides
are the measured line integrals themselves, so nothing of FDK's cone-beam approximation
or an operator's resolution enters, which is what biased reprojection consistency
(calibrate.py) towards longer distances.

What is identified: the fan angle of each pixel, pixel / SDD, at the known pixel pitch;
the data cannot tell the source-axis distance SOD (SOD and the specimen's size scale
together), so SOD is kept and SDD changes (the magnification SDD / SOD with it).
Needs: a cone beam, a full turn at evenly spaced angles, the mid-plane on the detector
(the trace of z = 0 on the tilted detector is read by linear interpolation between rows:
exact where it runs through a row), the detector tilt already known (calibrate.py), the
axis within ``COR_SEARCH_PX``, and columns whose conjugates fall on the detector. What
limits it is the data's own sampling: a conjugate pixel read between columns differs from
a measured one where the specimen has detail finer than a pixel, and that floor stays
while the distance's signal grows with the columns and the fan angle (docs/recon.md:
0.2-0.8 % off at 48 columns, within 0.06 % from 64 columns and 720 angles up).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.interpolate
import scipy.optimize
import torch

from .errors import ReconInputError
from .geometry import ConeGeometry, Geometry
from .projector import DetectorFrame, detector_frame
from .weights import is_full_rotation

SEARCH_FRACTION = 0.1
"""Distances searched: the start's +- this fraction."""
COR_SEARCH_PX = 1.0
"""How far (px) the axis column may move from the start while it is fitted with the distance."""
GRID_POINTS = 41
"""Distances of the coarse grid before the joint search (a 0.5 % step at +-10 %)."""
EVEN_ANGLES_TOLERANCE = 0.05
"""Largest deviation of an angle from an even grid, in angular steps."""
MIN_PAIRS = 4
"""Fewest conjugate column pairs on the detector."""
EDGE_MARGIN_PX = 1.0
"""Columns whose conjugate falls this close to the detector's edge (px) are left out."""


@dataclass(frozen=True)
class DistanceCalibration:
    """The calibrated geometry (distance and axis column), their start values, the conjugate-ray mismatch before and
    after, the columns compared, the mismatch evaluations and the time."""

    geometry: ConeGeometry
    distance_start_mm: float
    distance_mm: float
    cor_start: float
    cor: float
    mismatch_start: float
    mismatch: float
    columns: int
    evaluations: int
    seconds: float

    def applied(self, geometry: ConeGeometry, refine_axis: bool) -> ConeGeometry:
        """``geometry`` with the calibrated distance, and the refined axis column if ``refine_axis``."""
        return replace(geometry, source_detector_mm=self.distance_mm, **({"cor": self.cor} if refine_axis else {}))

    def record(self) -> dict:
        """The provenance record: method, distance and axis before and after, mismatch, columns, evaluations, time."""
        return {"method": "fan-beam conjugate rays in the mid-plane (recon/conjugate_rays.py)",
                "distance_mm": [self.distance_start_mm, self.distance_mm], "cor": [self.cor_start, self.cor],
                "mismatch": [self.mismatch_start, self.mismatch], "columns": self.columns,
                "evaluations": self.evaluations, "seconds": round(self.seconds, 3)}


def check_conjugate_rays(geometry: Geometry) -> None:
    """Refuse a geometry whose distance conjugate rays cannot calibrate (module docstring), naming the fix."""
    if not isinstance(geometry, ConeGeometry):
        raise ReconInputError("the source-detector distance exists only for a cone beam; drop 'distance' for "
                              "parallel-beam data")
    angles = geometry.angles_array
    if not is_full_rotation(angles):
        raise ReconInputError("calibrating the distance needs a full turn of projections (every mid-plane ray is "
                              "then measured twice, from opposite sides); leave 'distance' out for a short scan and "
                              "give the measured source-detector distance")
    step = 360.0 / angles.size
    offsets = np.mod(angles - angles[0] + step / 2, 360.0) - step / 2
    deviation = float(np.abs(np.sort(offsets) - step * np.arange(angles.size)).max()) / step
    if deviation > EVEN_ANGLES_TOLERANCE:
        raise ReconInputError(f"calibrating the distance needs evenly spaced angles over the turn (an angle is "
                              f"{deviation:.2f} steps off an even grid, at most {EVEN_ANGLES_TOLERANCE} allowed); "
                              "scan at a constant step or leave 'distance' out")
    rows = trace_rows(geometry, np.array([0.0, geometry.cols - 1.0]))
    if rows.min() < 0 or rows.max() > geometry.rows - 1:
        raise ReconInputError(f"the detector does not hold the mid-plane (the plane through the source runs from row "
                              f"{rows[0]:.1f} to {rows[1]:.1f}, the detector has rows 0-{geometry.rows - 1}); check "
                              "offset_row and tilt, or leave 'distance' out")


def trace_rows(geometry: ConeGeometry, cols: np.ndarray) -> np.ndarray:
    """Fractional detector rows where the mid-plane (lab z = 0) crosses the given columns."""
    frame = detector_frame(geometry, "cpu", torch.float64)
    return geometry.central_row - (cols - geometry.central_col) * float(frame.u[2]) / float(frame.v[2])


def mid_plane_sinogram(line_integrals: np.ndarray | torch.Tensor, geometry: ConeGeometry) -> np.ndarray:
    """The line integrals along the mid-plane's trace (angles in turn order from the first, cols), rows linearly
    interpolated."""
    data = line_integrals.detach().cpu().numpy() if isinstance(line_integrals, torch.Tensor) else line_integrals
    cols = np.arange(geometry.cols)
    rows = trace_rows(geometry, cols.astype(np.float64))
    below = np.clip(np.floor(rows).astype(int), 0, max(geometry.rows - 2, 0))
    above = np.minimum(below + 1, geometry.rows - 1)
    weight = rows - below
    data = np.asarray(data)
    sinogram = data[:, below, cols] * (1 - weight) + data[:, above, cols] * weight
    order = np.argsort(np.mod(geometry.angles_array - geometry.angles_array[0], 360.0), kind="stable")
    return sinogram[order].astype(np.float64)


class ConjugateRayMismatch:
    """E(SDD, cor) of the module docstring for one mid-plane sinogram (angles evenly over the turn, cols).

    ``distances``, ``cors``: the ranges searched; only columns whose conjugate stays on the
    detector over both are compared, so that the sum runs over the same terms everywhere.
    """

    def __init__(self, sinogram: np.ndarray, geometry: ConeGeometry, distances: tuple[float, float],
                 cors: tuple[float, float]) -> None:
        self.geometry = geometry
        self.angles = sinogram.shape[0]
        spectrum = np.fft.rfft(sinogram, axis=0)
        if self.angles % 2 == 0:
            spectrum[-1] = 0  # the Nyquist term cannot be shifted; left out of both sides
        self.reference = np.fft.irfft(spectrum, n=self.angles, axis=0)
        self.harmonics = np.arange(spectrum.shape[0])
        edges = np.arange(geometry.cols + 1) - 0.5
        running = np.concatenate([np.zeros((self.angles, 1)), np.cumsum(self.reference, axis=1)], axis=1)
        self.running_sum = scipy.interpolate.make_interp_spline(edges, running, k=3, axis=1)
        self.columns = self._columns(distances, cors)
        if self.columns.size < 2 * MIN_PAIRS:
            raise ReconInputError(f"only {self.columns.size} detector columns have their conjugate on the detector "
                                  f"(need {2 * MIN_PAIRS}): the rotation axis projects too near the edge; centre "
                                  "the axis on the detector or leave 'distance' out")
        self.norm = float((self.reference[:, self.columns] ** 2).sum())
        self.evaluations = 0

    def __call__(self, distance_mm: float, cor: float) -> float:
        self.evaluations += 1
        conjugate, shift = self.conjugates(distance_mm, cor, self.columns.astype(np.float64))
        pixels = self.running_sum(conjugate + 0.5) - self.running_sum(conjugate - 0.5)
        phase = np.exp(1j * self.harmonics[:, None] * shift[None, :])
        moved = np.fft.irfft(np.fft.rfft(pixels, axis=0) * phase, n=self.angles, axis=0)
        return float(((self.reference[:, self.columns] - moved) ** 2).sum() / self.norm)

    def conjugates(self, distance_mm: float, cor: float, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional columns of the given columns' conjugate rays, and the turn (rad) to their projections."""
        frame = detector_frame(replace(self.geometry, source_detector_mm=float(distance_mm), cor=float(cor)), "cpu",
                               torch.float64)
        source = frame.source.numpy()
        points = self._trace_points(frame, np.concatenate([cols, [0.0, 1.0]]))
        phi = np.arctan2(points[:-2, 0] - source[0], points[:-2, 1] - source[1])
        delta = math.atan2(float(frame.axis_x) - source[0], -source[1])
        first, per_col = points[-2], points[-1, 0] - points[-2, 0]  # the trace runs along lab x
        along = ((first[1] - source[1]) * np.tan(2 * delta - phi) + source[0] - first[0]) / per_col
        return along, math.pi + 2 * (phi - delta)

    def _columns(self, distances: tuple[float, float], cors: tuple[float, float]) -> np.ndarray:
        """Columns whose conjugate stays ``EDGE_MARGIN_PX`` inside the detector at the ranges' corners."""
        cols = np.arange(self.geometry.cols, dtype=np.float64)
        inside = np.ones(cols.size, dtype=bool)
        for distance in distances:
            for cor in cors:
                conjugate, _ = self.conjugates(distance, cor, cols)
                inside &= (conjugate >= EDGE_MARGIN_PX) & (conjugate <= self.geometry.cols - 1 - EDGE_MARGIN_PX)
        return np.flatnonzero(inside)

    def _trace_points(self, frame: DetectorFrame, cols: np.ndarray) -> np.ndarray:
        """Lab positions (len(cols), 3) of the mid-plane's trace at the given columns."""
        rows = trace_rows(self.geometry, cols)
        a = torch.from_numpy((cols - self.geometry.central_col) * self.geometry.pixel_mm)
        b = torch.from_numpy((rows - self.geometry.central_row) * self.geometry.pixel_mm)
        return (frame.origin + a[:, None] * frame.u + b[:, None] * frame.v).numpy()


def calibrate_distance(line_integrals: np.ndarray | torch.Tensor, geometry: Geometry, *,
                       search_fraction: float = SEARCH_FRACTION) -> DistanceCalibration:
    """The source-detector distance (and axis column) of ``geometry`` (the start, its tilt right) that make the
    mid-plane's conjugate rays agree (module docstring); SOD kept.

    ``search_fraction``: the distances searched, the start's +- this fraction.
    """
    check_conjugate_rays(geometry)
    began = time.perf_counter()
    start, cor = float(geometry.source_detector_mm), float(geometry.cor_value())
    distances = (start * (1 - search_fraction), start * (1 + search_fraction))
    if not distances[0] > geometry.source_sample_mm:
        raise ReconInputError(f"search_fraction {search_fraction} reaches a source-detector distance "
                              f"({distances[0]:.1f} mm) inside the source-axis distance ({geometry.source_sample_mm} "
                              "mm); search less")
    mismatch = ConjugateRayMismatch(mid_plane_sinogram(line_integrals, geometry), geometry, distances,
                                    (cor - COR_SEARCH_PX, cor + COR_SEARCH_PX))
    grid = np.linspace(*distances, GRID_POINTS)
    best = grid[int(np.argmin([mismatch(d, cor) for d in grid]))]
    percent = start / 100  # the search's variables: distance in % of the start, axis in px

    def objective(x: np.ndarray) -> float:
        return mismatch(start + x[0] * percent, cor + x[1])

    first = (best - start) / percent
    step = (grid[1] - grid[0]) / percent
    found = scipy.optimize.minimize(
        objective, [first, 0.0], method="Nelder-Mead",
        bounds=[(-100 * search_fraction, 100 * search_fraction), (-COR_SEARCH_PX, COR_SEARCH_PX)],
        options={"initial_simplex": [[first, 0.0], [first + step, 0.0], [first, 0.1]], "xatol": 1e-4,
                 "fatol": 1e-12})
    distance, axis = start + float(found.x[0]) * percent, cor + float(found.x[1])
    return DistanceCalibration(replace(geometry, source_detector_mm=distance, cor=axis), start, distance, cor, axis,
                               mismatch(start, cor), float(found.fun), int(mismatch.columns.size),
                               mismatch.evaluations, time.perf_counter() - began)
