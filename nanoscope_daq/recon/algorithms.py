"""Analytic reconstruction of line integrals: FBP (parallel), FDK (cone) and the Fourier method (parallel).

Input: line integrals of attenuation (-log of the normalised projections), shape
(angles, rows, cols), and a geometry (geometry.py). Output: a z-y-x volume of
attenuation per mm on ``volume`` (default: the geometry's natural grid). One code path
on any torch device; differentiable in the projections and the geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import RECON_ALGORITHMS
from .backproject import backproject_cone, backproject_parallel, parallel_slices
from .errors import ReconInputError
from .filters import check_filter, filter_rows, padded_length, ramp_response
from .fourier import fourier_slices
from .geometry import ConeGeometry, Geometry, ParallelGeometry, VolumeGrid, as_tensor
from .projector import backproject
from .weights import projection_weights

ALGORITHMS = RECON_ALGORITHMS


@dataclass(frozen=True)
class FilterSpec:
    """Ramp filter choice: window name, cutoff (fraction of Nyquist), padding of the detector rows."""

    name: str = "ram-lak"
    cutoff: float = 1.0
    pad_mode: str = "edge"

    def response(self, cols: int, device: torch.device | str) -> torch.Tensor:
        return ramp_response(padded_length(cols), check_filter(self.name), self.cutoff, device)


RAM_LAK = FilterSpec()
"""Ram-Lak at full bandwidth: the default filter of every reconstruction."""


def direct_algorithm(geometry: Geometry) -> str:
    """The direct back-projection for this geometry, which takes any detector pose and specimen motion: "fdk" for a
    cone beam, "fbp" for a parallel one."""
    return "fdk" if isinstance(geometry, ConeGeometry) else "fbp"


def check_algorithm(algorithm: str, geometry: Geometry) -> str:
    """The algorithm to run for this geometry; "fbp" on a cone beam is FDK."""
    if algorithm not in ALGORITHMS:
        raise ReconInputError(f"unknown algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    if isinstance(geometry, ConeGeometry):
        if algorithm == "fourier":
            raise ReconInputError("the Fourier method needs parallel-beam data; use algorithm 'fdk' for a cone beam")
        return "fdk"
    if algorithm == "fdk":
        raise ReconInputError("FDK is the cone-beam algorithm; use 'fbp' or 'fourier' for parallel-beam data")
    return algorithm


def as_projections(data: np.ndarray | torch.Tensor, geometry: Geometry, device: torch.device | str) -> torch.Tensor:
    """``data`` as float32 (angles, rows, cols) on ``device``, checked against the geometry."""
    tensor = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    tensor = tensor.to(device=device, dtype=torch.float32)
    expected = (geometry.num_angles, geometry.rows, geometry.cols)
    if tuple(tensor.shape) != expected:
        raise ReconInputError(
            f"projections have shape {tuple(tensor.shape)} but the geometry describes {expected} (angles, rows, cols); "
            "give one rotation angle per projection and the detector size of the data"
        )
    return tensor


def angles_rad(geometry: Geometry, device: torch.device | str) -> torch.Tensor:
    return as_tensor(geometry.angles_deg, device) * (math.pi / 180)


def fdk_filtered(projections: torch.Tensor, geometry: ConeGeometry, weights: torch.Tensor,
                 spec: FilterSpec) -> torch.Tensor:
    """Cone-beam projections cosine-weighted, redundancy-weighted and ramp-filtered (per mm at the axis)."""
    device = projections.device
    u = (torch.arange(geometry.cols, device=device) - geometry.central_col) * geometry.pixel_mm
    v = (torch.arange(geometry.rows, device=device) - geometry.central_row) * geometry.pixel_mm
    sdd = geometry.source_detector_mm
    cosine = sdd / torch.sqrt(sdd**2 + u[None, :] ** 2 + v[:, None] ** 2)
    weighted = projections * cosine[None]
    weighted *= weights[:, None, :] / geometry.sample_pixel_mm  # in place: one pass less over the projections
    return filter_rows(weighted, spec.response(geometry.cols, device), spec.pad_mode)


def parallel_filtered(slices: torch.Tensor, geometry: ParallelGeometry, weights: torch.Tensor,
                      spec: FilterSpec, response: torch.Tensor | None = None) -> torch.Tensor:
    """Parallel-beam slices (angles, nz, cols) ramp-filtered and weighted (per mm).

    ``response``: a filter's rfft of the padded length instead of ``spec``'s window (learned_fbp.py).
    """
    response = spec.response(geometry.cols, slices.device) if response is None else response
    return filter_rows(slices, response, spec.pad_mode) * (weights[:, :, None] / geometry.pixel_mm)


def reconstruct(line_integrals: np.ndarray | torch.Tensor, geometry: Geometry, volume: VolumeGrid | None = None, *,
                algorithm: str = "fbp", filter: FilterSpec = FilterSpec(), weights: torch.Tensor | None = None,
                kernel_width: int = 4, match_fbp_noise: bool = True, shifts_mm: torch.Tensor | None = None,
                device: torch.device | str = "cpu", out: torch.Tensor | None = None) -> torch.Tensor:
    """Attenuation (1/mm, z-y-x) from line integrals (angles, rows, cols) with FBP, FDK or the Fourier method.

    ``weights``: per-projection angular weights (radians, (angles, 1) or (angles, cols));
    default: the quadrature of the measured angles (weights.py). ``kernel_width`` and
    ``match_fbp_noise`` (same noise as FBP, or False: the exact, sharper and noisier
    interpolation) concern the Fourier method (fourier.py). ``shifts_mm`` (angles, 3): a rigid
    translation of the specimen in the lab at each projection (motion), compensated by FBP/FDK.
    A tilted detector or ``shifts_mm`` takes projector.py's general back-projection. ``out``: a volume
    to add the reconstruction into (returned); FDK on the CPU sums straight into one laid out as
    ``cone_kernel.kernel_volume`` (no volume-sized temporary).
    """
    algorithm = check_algorithm(algorithm, geometry)
    volume = volume or geometry.default_volume()
    projections = as_projections(line_integrals, geometry, device)
    if weights is None:
        weights = projection_weights(geometry, device)
    theta = angles_rad(geometry, device)
    if geometry.is_tilted() or shifts_mm is not None:
        if algorithm == "fourier":
            raise ReconInputError("the Fourier method needs an aligned detector and no motion; use algorithm 'fbp' "
                                  "(or resample the projections onto an aligned detector first)")
        if algorithm == "fdk":
            filtered = fdk_filtered(projections, geometry, weights, filter)
        else:
            filtered = parallel_filtered(projections, geometry, weights, filter)
        return _added(backproject(filtered, theta, geometry, volume, shifts_mm), out)
    if algorithm == "fdk":
        return backproject_cone(fdk_filtered(projections, geometry, weights, filter), theta, geometry, volume, out)
    slices = parallel_slices(projections, geometry, volume)
    if algorithm == "fourier":
        check_filter(filter.name)
        return _added(fourier_slices(slices, weights, theta, geometry.cor_value(), geometry.pixel_mm, volume,
                                     filter.response(geometry.cols, device), filter.pad_mode, kernel_width,
                                     match_fbp_noise), out)
    filtered = parallel_filtered(slices, geometry, weights, filter)
    return _added(backproject_parallel(filtered, theta, geometry.cor_value(), geometry.pixel_mm, volume), out)


def _added(volume: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``volume``, or ``out`` with ``volume`` added to it when one is given."""
    return volume if out is None else out.add_(volume)
