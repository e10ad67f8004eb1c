"""Learned FBP with known operators: only the ramp filter's response is learned; weights and back-projection fixed.

Filtered back-projection is a fixed linear operator (angular weights, back-projection)
after one learnable step, the filter. Learning only the filter's gain per frequency of
the padded detector row -- length // 2 + 1 numbers, 130 for 128 detector columns,
starting at the exact ramp (Ram-Lak) -- from the simulator's ground truth gives a
reconstruction whose every other step is still the analytic one (Maier et al. 2019,
"Learning with known operators"): few parameters, little training data, and nothing
that depends on the instrument's number of angles or its angular weights, so it can be
carried to another instrument with the same detector sampling.
"""

from __future__ import annotations

import math

import torch

from .algorithms import FilterSpec, angles_rad, parallel_filtered
from .backproject import backproject_parallel
from .filters import padded_length, ramp_response
from .geometry import ParallelGeometry, VolumeGrid
from .weights import projection_weights


class LearnedFilterFBP(torch.nn.Module):
    """FBP of single slices (batch, angles, cols) on an (ny, nx) grid with a learned gain on the Ram-Lak response."""

    def __init__(self, geometry: ParallelGeometry, shape: tuple[int, int], voxel_mm: float,
                 pad_mode: str = "edge") -> None:
        super().__init__()
        self.geometry, self.shape, self.voxel_mm = geometry, shape, voxel_mm
        self.spec = FilterSpec("ram-lak", 1.0, pad_mode)
        self.register_buffer("ramp", ramp_response(padded_length(geometry.cols), "ram-lak"))
        self.gain = torch.nn.Parameter(torch.ones_like(self.ramp))

    def with_geometry(self, geometry: ParallelGeometry) -> LearnedFilterFBP:
        """The same learned filter on another scan with the same detector sampling (other angles, weights)."""
        if geometry.cols != self.geometry.cols:
            raise ValueError(f"the filter was learned for {self.geometry.cols} detector columns, not {geometry.cols}")
        other = LearnedFilterFBP(geometry, self.shape, self.voxel_mm, self.spec.pad_mode)
        other.load_state_dict(self.state_dict())
        return other

    def forward(self, sinograms: torch.Tensor) -> torch.Tensor:
        batch = sinograms.shape[0]
        slices = sinograms.permute(1, 0, 2)  # (angles, batch, cols): slices are independent
        weights = projection_weights(self.geometry, sinograms.device)
        filtered = parallel_filtered(slices, self.geometry, weights, self.spec, self.ramp * self.gain)
        volume = VolumeGrid((batch, *self.shape), self.voxel_mm)
        return backproject_parallel(filtered, angles_rad(self.geometry, sinograms.device),
                                    self.geometry.cor_value(), self.geometry.pixel_mm, volume)


def inscribed_disc(shape: tuple[int, int]) -> torch.Tensor:
    """Pixels inside the circle every projection sees (the error is measured there)."""
    ny, nx = shape
    y = torch.arange(ny) - (ny - 1) / 2
    x = torch.arange(nx) - (nx - 1) / 2
    return (x[None, :] ** 2 + y[:, None] ** 2) < (min(ny, nx) / 2 - 1) ** 2


def train(model: torch.nn.Module, inputs: torch.Tensor, truths: torch.Tensor, *, steps: int = 300,
          batch: int = 8, learning_rate: float = 0.01, seed: int = 0) -> list[float]:
    """Adam on the mean squared error inside the inscribed disc; ``steps`` batches drawn from the training slices.

    Returns the loss of each step. Any model mapping ``inputs`` (batch, ...) to images
    (batch, ny, nx) trains the same way (the benchmark's post-processing CNN too).
    """
    generator = torch.Generator().manual_seed(seed)
    mask = inscribed_disc(tuple(truths.shape[-2:]))
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    losses = []
    for _ in range(steps):
        pick = torch.randint(0, inputs.shape[0], (min(batch, inputs.shape[0]),), generator=generator)
        optimiser.zero_grad()
        loss = ((model(inputs[pick]) - truths[pick]) ** 2)[:, mask].mean()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def rmse(images: torch.Tensor, truths: torch.Tensor) -> float:
    """RMSE inside the inscribed disc over a batch of slices."""
    mask = inscribed_disc(tuple(truths.shape[-2:]))
    return float(math.sqrt(float(((images - truths) ** 2)[:, mask].mean())))
