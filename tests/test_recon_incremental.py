"""IncrementalFBP: chunks added one by one equal the one-shot reconstruction; remove() undoes a chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanoscope_daq.recon import ConeGeometry, IncrementalFBP, ParallelGeometry, VolumeGrid, reconstruct
from nanoscope_daq.recon.phantoms import project_ellipsoids, shepp_logan_3d
from nanoscope_daq.recon.weights import projection_weights

pytestmark = pytest.mark.torch_threads(1)


PHANTOM = shepp_logan_3d(0.2)


@pytest.mark.parametrize("kind", ["parallel", "cone"])
def test_chunks_add_up_to_the_one_shot_reconstruction(kind):
    angles = np.linspace(0, 360, 96, endpoint=False)
    if kind == "parallel":
        geometry = ParallelGeometry(angles, 8, 48, 0.01)
    else:
        geometry = ConeGeometry(angles, 8, 48, 0.03, 3.0, 9.0)
    projections = torch.tensor(project_ellipsoids(PHANTOM, geometry), dtype=torch.float32)
    volume = VolumeGrid((4, 40, 40), 0.01)
    one_shot = reconstruct(projections, geometry, volume)
    running = IncrementalFBP(geometry, volume)
    for start in range(0, 96, 20):  # uneven chunks, in acquisition order
        running.add(projections[start:start + 20], angles[start:start + 20])
    assert running.projections == 96
    assert torch.allclose(running.volume(), one_shot, atol=1e-5 * float(one_shot.abs().max()))
    # Sliding window: taking the first chunk out leaves the rest.
    running.remove(projections[:20], angles[:20])
    weights = projection_weights(geometry, "cpu")[20:]
    rest = reconstruct(projections[20:], geometry.with_angles(angles[20:]), volume, weights=weights)
    assert torch.allclose(running.volume(), rest, atol=1e-5 * float(one_shot.abs().max()))


def test_measured_angles_take_the_weight_of_the_nearest_planned_angle():
    plan = np.linspace(0, 180, 60, endpoint=False)
    geometry = ParallelGeometry(plan, 4, 40, 0.01)
    measured = plan + np.random.default_rng(0).normal(0, 0.1, plan.size)  # encoder jitter
    projections = torch.tensor(project_ellipsoids(PHANTOM, geometry.with_angles(measured)), dtype=torch.float32)
    running = IncrementalFBP(geometry)
    running.add(projections[:30], measured[:30])
    running.add(projections[30:], measured[30:])
    expected = reconstruct(projections, geometry.with_angles(measured), weights=torch.full((60, 1), np.pi / 60))
    assert torch.allclose(running.volume(), expected, atol=1e-5 * float(expected.abs().max()))
