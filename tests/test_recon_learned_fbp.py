"""Learned FBP with known operators: a learned filter, fixed weights and back-projection (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanoscope_daq.recon import ParallelGeometry
from nanoscope_daq.recon.learned_fbp import LearnedFilterFBP, rmse, train
from nanoscope_daq.recon.phantoms import parallel_sinogram, poisson_line_integrals, random_bone_slice, rasterise

pytestmark = pytest.mark.torch_threads(1)

SIZE = 32


def _slices(geometry: ParallelGeometry, count: int, photons: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    phantoms = [random_bone_slice(rng, 0.45 * SIZE) for _ in range(count)]
    sinograms = [poisson_line_integrals(parallel_sinogram(p, geometry, 2), photons, 0.1, rng) for p in phantoms]
    truths = [rasterise(p, (SIZE, SIZE), 1.0, 4) for p in phantoms]
    return torch.tensor(np.array(sinograms), dtype=torch.float32), torch.tensor(np.array(truths), dtype=torch.float32)


def test_learned_filter_starts_as_ram_lak_fbp_and_learns_to_beat_it_on_low_dose_slices():
    geometry = ParallelGeometry(np.linspace(0, 180, 60, endpoint=False), 1, SIZE + 1, 1.0)
    model = LearnedFilterFBP(geometry, (SIZE, SIZE), 1.0)
    assert sum(p.numel() for p in model.parameters()) == 37  # one gain per frequency of the padded row (72)
    sinograms, truths = _slices(geometry, 6, 100.0, seed=0)  # low dose: 100 photons
    with torch.no_grad():
        before = rmse(model(sinograms[2:]), truths[2:])
    losses = train(model, sinograms[:2], truths[:2], steps=60, learning_rate=0.05)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        after = rmse(model(sinograms[2:]), truths[2:])  # slices it never saw
        other = model.with_geometry(geometry.with_angles(np.linspace(0, 180, 90, endpoint=False)))
        assert torch.equal(other.gain, model.gain)
    assert after < 0.85 * before  # measured 0.085 against 0.109


def test_learned_filter_refuses_a_detector_it_was_not_learned_for():
    model = LearnedFilterFBP(ParallelGeometry(np.linspace(0, 180, 30, endpoint=False), 1, 33, 1.0), (32, 32), 1.0)
    with pytest.raises(ValueError, match="learned for 33 detector columns"):
        model.with_geometry(ParallelGeometry(np.linspace(0, 180, 30, endpoint=False), 1, 65, 1.0))
