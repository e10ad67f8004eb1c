"""Filtered back-projection accumulated chunk by chunk, for streaming and sliding windows.

Filtering acts on each projection alone and back-projection is a sum over
projections, so the reconstruction of a set of projections is the sum of the
reconstructions of its chunks. ``add`` back-projects a chunk into the running volume,
``remove`` takes a chunk's contribution out again (a sliding window over a continuous
rotation), ``volume`` returns the sum so far.

Each projection is weighted as the planned scan's projection at the nearest angle
(weights.py; the geometry given at construction holds the planned angles, e.g. the
``grid_*`` of a ``tomograms`` event), or by explicit ``weights``.
"""

from __future__ import annotations

import numpy as np
import torch

from .algorithms import FilterSpec, reconstruct
from .geometry import Angles, Geometry, VolumeGrid
from .weights import projection_weights


class IncrementalFBP:
    """Running FBP (FDK for a cone beam) of projection chunks with their measured angles."""

    def __init__(self, geometry: Geometry, volume: VolumeGrid | None = None, *, filter: FilterSpec = FilterSpec(),
                 device: torch.device | str = "cpu") -> None:
        self.geometry = geometry
        self.grid = volume or geometry.default_volume()
        self.filter = filter
        self.device = device
        self._plan = geometry.angles_array
        self._sum = torch.zeros(self.grid.shape, device=device)
        self.projections = 0

    def _contribution(self, projections: np.ndarray | torch.Tensor, angles_deg: Angles,
                      weights: torch.Tensor | None) -> torch.Tensor:
        chunk = self.geometry.with_angles(angles_deg)
        if weights is None:
            weights = projection_weights(chunk, self.device, plan_deg=self._plan)
        return reconstruct(projections, chunk, self.grid, algorithm="fbp", filter=self.filter, weights=weights,
                           device=self.device)

    def add(self, projections: np.ndarray | torch.Tensor, angles_deg: Angles,
            weights: torch.Tensor | None = None) -> None:
        """Back-project line integrals (n, rows, cols) taken at ``angles_deg`` into the running volume."""
        self._sum += self._contribution(projections, angles_deg, weights)
        self.projections += len(angles_deg)

    def remove(self, projections: np.ndarray | torch.Tensor, angles_deg: Angles,
               weights: torch.Tensor | None = None) -> None:
        """Take out a chunk added before (same projections, angles and weights)."""
        self._sum -= self._contribution(projections, angles_deg, weights)
        self.projections -= len(angles_deg)

    def volume(self) -> torch.Tensor:
        """The reconstruction (1/mm, z-y-x) of every projection added and not removed."""
        return self._sum.clone()
