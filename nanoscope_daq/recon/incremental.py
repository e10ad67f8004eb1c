"""Filtered back-projection accumulated chunk by chunk, for streaming and sliding windows.

Filtering acts on each projection alone and back-projection is a sum over
projections, so the reconstruction of a set of projections is the sum of the
reconstructions of its chunks. ``add`` back-projects a chunk into the running volume,
``remove`` takes a chunk's contribution out again, ``update`` does both in one
transform (a sliding window over a continuous rotation: new = old + new frames -
replaced frames), ``volume`` returns the sum so far.

The Fourier method (parallel beam) is linear in the projections too, and its cost per
chunk is one FFT of the volume's slices whatever the chunk's size, against a cost
proportional to the chunk for back-projection: on the CPU it is the one that keeps
pace with a camera (docs/recon.md, benchmarks/bench_streaming.py).

Each projection is weighted as the planned scan's projection at the nearest angle
(weights.py; the geometry given at construction holds the planned angles, e.g. the
``grid_*`` of a ``tomograms`` event), or by explicit ``weights``.
"""

from __future__ import annotations

import numpy as np
import torch

from .algorithms import RAM_LAK, FilterSpec, check_algorithm, reconstruct
from .cone_kernel import kernel_volume
from .geometry import Angles, Geometry, VolumeGrid
from .weights import projection_weights


class IncrementalFBP:
    """Running FBP (FDK for a cone beam, or the Fourier method) of projection chunks with their measured angles."""

    def __init__(self, geometry: Geometry, volume: VolumeGrid | None = None, *, filter: FilterSpec = RAM_LAK,
                 algorithm: str = "fbp", kernel_width: int = 4, device: torch.device | str = "cpu") -> None:
        self.geometry = geometry
        self.grid = volume or geometry.default_volume()
        self.filter = filter
        self.algorithm = check_algorithm(algorithm, geometry)
        self.kernel_width = kernel_width
        self.device = device
        self._plan = geometry.angles_array
        compiled = self.algorithm == "fdk" and torch.device(device).type == "cpu"
        self._sum = torch.from_numpy(kernel_volume(self.grid.shape)) if compiled else \
            torch.zeros(self.grid.shape, device=device)
        """The running sum; for FDK on the CPU laid out as the compiled kernel sums (y, x, z), so that each chunk
        is summed into it in place (``volume()`` returns the usual z-y-x layout)."""
        self.projections = 0

    def _weights(self, angles_deg: np.ndarray, weights: torch.Tensor | None) -> torch.Tensor:
        if weights is not None:
            return weights.to(self.device)
        return projection_weights(self.geometry.with_angles(angles_deg), self.device, plan_deg=self._plan)

    def contribution(self, projections: np.ndarray | torch.Tensor, angles_deg: Angles,
                     weights: torch.Tensor | None = None, shifts_mm: torch.Tensor | None = None,
                     out: torch.Tensor | None = None) -> torch.Tensor:
        """The volume of one chunk alone (what ``add`` adds), or ``out`` with it added; ``shifts_mm``: the
        specimen's motion (motion.py)."""
        chunk = self.geometry.with_angles(angles_deg)
        return reconstruct(projections, chunk, self.grid, algorithm=self.algorithm, filter=self.filter,
                           weights=self._weights(chunk.angles_array, weights), kernel_width=self.kernel_width,
                           shifts_mm=shifts_mm, device=self.device, out=out)

    def add(self, projections: np.ndarray | torch.Tensor, angles_deg: Angles,
            weights: torch.Tensor | None = None, shifts_mm: torch.Tensor | None = None) -> None:
        """Back-project line integrals (n, rows, cols) taken at ``angles_deg`` into the running volume."""
        self.contribution(projections, angles_deg, weights, shifts_mm, out=self._sum)
        self.projections += len(angles_deg)

    def remove(self, projections: np.ndarray | torch.Tensor, angles_deg: Angles,
               weights: torch.Tensor | None = None) -> None:
        """Take out a chunk added before (same projections, angles and weights)."""
        self._sum -= self.contribution(projections, angles_deg, weights)
        self.projections -= len(angles_deg)

    def difference(self, added: torch.Tensor, added_angles: Angles, added_weights: torch.Tensor,
                   removed: torch.Tensor, removed_angles: Angles, removed_weights: torch.Tensor,
                   out: torch.Tensor | None = None) -> torch.Tensor:
        """Contribution of ``added`` minus that of ``removed`` (either may be empty), in one transform; or ``out``
        with it added."""
        angles = np.concatenate([np.asarray(added_angles, float), np.asarray(removed_angles, float)])
        if angles.size == 0:
            return torch.zeros(self.grid.shape, device=self.device) if out is None else out
        projections = torch.cat([added.to(self.device), removed.to(self.device)])
        weights = torch.cat([added_weights.to(self.device), -removed_weights.to(self.device)])
        return self.contribution(projections, angles, weights, out=out)

    def update(self, added: torch.Tensor, added_angles: Angles, added_weights: torch.Tensor,
               removed: torch.Tensor, removed_angles: Angles, removed_weights: torch.Tensor) -> None:
        """Add one chunk and take out the frames it replaces, in one transform, into the running volume in place."""
        self.difference(added, added_angles, added_weights, removed, removed_angles, removed_weights, out=self._sum)
        self.projections += len(added_angles) - len(removed_angles)

    def volume(self) -> torch.Tensor:
        """The reconstruction (1/mm, z-y-x, contiguous) of every projection added and not removed."""
        return self._sum.clone(memory_format=torch.contiguous_format)

    def running(self) -> torch.Tensor:
        """The running sum itself (no copy; z-y-x, for FDK on the CPU a view of (y, x, z) memory): read it, never
        write it."""
        return self._sum
