"""The known operators (projector.py): forward and back-projection for any detector pose and rigid motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanoscope_daq.recon import ConeGeometry, ParallelGeometry, ReconInputError, reconstruct
from nanoscope_daq.recon.backproject import backproject_cone
from nanoscope_daq.recon.phantoms import Ellipsoids, project_ellipsoids, rasterise_ellipsoids, shepp_logan_3d
from nanoscope_daq.recon.projector import backproject, forward_project

pytestmark = pytest.mark.torch_threads(1)

BLOB = Ellipsoids(np.array([[0.3, -0.2, 0.1]]), np.array([[1.0, 0.7, 0.8]]), np.array([20.0]), np.array([1.0]))
ANGLES = np.linspace(0, 360, 40, endpoint=False)


def _cone(**pose) -> ConeGeometry:
    return ConeGeometry(ANGLES, 32, 48, 0.5, 25.0, 125.0, cor=24.7, detector_offset_px=(0.8, -1.3), **pose)


def _relative_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


@pytest.mark.parametrize("geometry", [
    _cone(), _cone(tilt_deg=2.0, roll_deg=3.0),
    ParallelGeometry(ANGLES[:20] / 2, 32, 48, 0.1, cor=24.1, tilt_deg=2.0),
], ids=["cone", "cone tilted and rolled", "parallel tilted"])
@pytest.mark.parametrize("moving", [False, True], ids=["still", "moving"])
def test_forward_projection_matches_the_exact_line_integrals(geometry, moving):
    shifts = np.random.default_rng(0).normal(0, 0.2, (geometry.num_angles, 3)) if moving else None
    volume = geometry.default_volume()
    image = torch.from_numpy(rasterise_ellipsoids(BLOB, volume, 4))
    theta = torch.deg2rad(torch.tensor(geometry.angles_array, dtype=torch.float32))
    projected = forward_project(image, volume, geometry, theta,
                                None if shifts is None else torch.tensor(shifts, dtype=torch.float32)).numpy()
    exact = project_ellipsoids(BLOB, geometry, 2, shifts)
    # Measured 3.3-3.6 % (the voxelised edge of the ellipsoid); a wrong pose or shift gives > 10 %.
    assert _relative_rms(projected, exact) < 0.045
    assert projected.sum() / exact.sum() == pytest.approx(1.0, abs=0.003)


def test_general_back_projection_is_the_cone_back_projection_on_an_aligned_detector():
    geometry = _cone()
    theta = torch.deg2rad(torch.tensor(ANGLES, dtype=torch.float32))
    filtered = torch.from_numpy(np.random.default_rng(1).standard_normal((40, 32, 48)).astype(np.float32))
    general = backproject(filtered, theta, geometry, geometry.default_volume())
    aligned = backproject_cone(filtered, theta, geometry, geometry.default_volume())
    assert torch.allclose(general, aligned, atol=1e-5 * float(aligned.abs().max()))


def test_fdk_with_the_known_tilt_and_motion_reconstructs_what_the_aligned_still_scan_does():
    phantom = shepp_logan_3d(1.6, 1.0)
    tilted = _cone(tilt_deg=3.0, roll_deg=2.0)
    shifts = np.zeros((40, 3))
    shifts[20:, 0], shifts[20:, 2] = 0.3, -0.2  # a jump half way
    data = project_ellipsoids(phantom, tilted, 1, shifts)
    volume = tilted.default_volume()
    exact = rasterise_ellipsoids(phantom, volume, 2)
    known = reconstruct(data, tilted, volume, shifts_mm=torch.tensor(shifts, dtype=torch.float32)).numpy()
    ignored = reconstruct(data, _cone(), volume).numpy()
    reference = reconstruct(project_ellipsoids(phantom, _cone(), 1), _cone(), volume).numpy()

    def rmse(image: np.ndarray) -> float:
        return float(np.sqrt(np.mean((image - exact) ** 2)))
    # Measured: known pose and motion as accurate as the aligned still scan; ignoring them about twice the error.
    assert rmse(known) < 1.05 * rmse(reference)
    assert rmse(ignored) > 1.5 * rmse(reference)


def test_fourier_method_refuses_a_tilted_detector():
    geometry = ParallelGeometry(ANGLES[:20] / 2, 4, 48, 0.1, tilt_deg=0.5)
    with pytest.raises(ReconInputError, match="aligned detector"):
        reconstruct(np.zeros((20, 4, 48), np.float32), geometry, algorithm="fourier")
