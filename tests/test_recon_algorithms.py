"""FBP, FDK and the Fourier method against analytic phantoms with exact projections."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nanoscope_daq.recon import ConeGeometry, FilterSpec, ParallelGeometry, ReconInputError, VolumeGrid, reconstruct
from nanoscope_daq.recon.fourier import _kernel_transform, _taps, kernel_beta
from nanoscope_daq.recon.phantoms import (
    Ellipsoids,
    parallel_sinogram,
    project_ellipsoids,
    rasterise,
    shepp_logan,
    shepp_logan_3d,
)
from nanoscope_daq.recon.weights import parker, projection_weights

N, PIXEL = 128, 0.01


pytestmark = pytest.mark.torch_threads(1)


def _inside(n: int) -> np.ndarray:
    c = np.arange(n) - (n - 1) / 2
    return np.hypot(*np.meshgrid(c, c)) < n / 2 - 1


def _rmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b)[mask] ** 2)))


@pytest.fixture(scope="module")
def phantom():
    ellipses = shepp_logan(N * PIXEL * 0.46, 1.0)
    return ellipses, rasterise(ellipses, (N, N), PIXEL, 4)


@pytest.mark.parametrize("algorithm, match_fbp_noise, limit", [("fbp", True, 0.035), ("fourier", True, 0.035),
                                                               ("fourier", False, 0.027)])
def test_parallel_reconstruction_of_the_shepp_logan_phantom_is_close_to_the_exact_image(phantom, algorithm,
                                                                                        match_fbp_noise, limit):
    ellipses, exact = phantom
    geometry = ParallelGeometry(np.linspace(0, 180, 180, endpoint=False), 1, N, PIXEL)
    sinogram = parallel_sinogram(ellipses, geometry, subsamples=4)[:, None]
    volume = VolumeGrid((1, N, N), PIXEL)
    image = reconstruct(sinogram, geometry, volume, algorithm=algorithm, match_fbp_noise=match_fbp_noise).numpy()[0]
    mask = _inside(N)
    error = _rmse(image, exact, mask)
    # Measured: fbp 0.030, fourier 0.029 (noise matched to fbp), 0.023 (exact interpolation: sharper edges; the
    # phantom is discontinuous, its range is 0..1).
    assert error < limit
    assert image[mask].mean() == pytest.approx(exact[mask].mean(), abs=0.002)  # no DC bias from the ramp
    # Away from edges the values are right to about 1 % of the range.
    smooth = np.abs(exact - np.roll(exact, 1, 0)) + np.abs(exact - np.roll(exact, 1, 1)) == 0
    from scipy.ndimage import binary_erosion
    interior = binary_erosion(smooth & mask, iterations=3)
    assert np.abs(image - exact)[interior].mean() < 0.015  # measured: fbp 0.006, fourier 0.011 (ringing)


def test_filters_trade_resolution_for_noise(phantom):
    ellipses, exact = phantom
    geometry = ParallelGeometry(np.linspace(0, 180, 180, endpoint=False), 1, N, PIXEL)
    sinogram = parallel_sinogram(ellipses, geometry, subsamples=2)[:, None]
    noisy = sinogram + np.random.default_rng(0).normal(0, 0.05 * sinogram.std(), sinogram.shape)
    noise = {}
    for name in ("ram-lak", "shepp-logan", "cosine", "hamming", "hann"):
        clean = reconstruct(sinogram, geometry, filter=FilterSpec(name)).numpy()[0]
        noise[name] = np.std(reconstruct(noisy, geometry, filter=FilterSpec(name)).numpy()[0] - clean)
    order = ["ram-lak", "shepp-logan", "cosine", "hamming", "hann"]
    assert all(noise[a] > noise[b] for a, b in zip(order, order[1:]))
    with pytest.raises(ReconInputError, match="unknown filter 'butterworth'; choose one of"):
        reconstruct(sinogram, geometry, filter=FilterSpec("butterworth"))


def test_fourier_method_equals_fbp_and_gridding_is_accurate(phantom):
    ellipses, _ = phantom
    geometry = ParallelGeometry(np.linspace(0, 180, 90, endpoint=False), 1, N, PIXEL, cor=62.3)
    sinogram = parallel_sinogram(ellipses, geometry)[:, None]
    fbp = reconstruct(sinogram, geometry, filter=FilterSpec("hann")).numpy()[0]
    fourier = reconstruct(sinogram, geometry, filter=FilterSpec("hann"), algorithm="fourier").numpy()[0]
    mask = _inside(N)
    # Same filter and weights: they differ only by the interpolation along the detector (linear vs exact).
    assert _rmse(fbp, fourier, mask) < 0.02
    # With a gradient wanted the torch gridding runs instead of FINUFFT: the same image to the kernel's accuracy.
    projections = torch.tensor(sinogram, dtype=torch.float32, requires_grad=True)
    gridded = reconstruct(projections, geometry, filter=FilterSpec("hann"), algorithm="fourier")
    assert gridded.requires_grad
    assert np.abs(gridded.detach().numpy()[0] - fourier).max() < 2e-3 * np.abs(fourier).max()
    # The gridding kernel reproduces a plane wave e^{2 pi i xi n} to its design accuracy.
    for width, tolerance in ((4, 1e-3), (6, 2e-5)):
        beta, big = kernel_beta(width), 64
        for xi in (0.1234, -0.3777, 0.49):
            cells, w = _taps(torch.tensor([xi * big]), width, beta, big)
            grid = torch.zeros(big, dtype=torch.complex64).index_add_(0, cells[0], w[0].to(torch.complex64))
            n = torch.arange(32) - 16
            image = (torch.fft.ifft(grid) * big)[torch.remainder(n, big)] / _kernel_transform(n / big, width, beta)
            assert (image - torch.exp(2j * math.pi * xi * n)).abs().max() < tolerance


def test_irregular_and_full_turn_angles_are_weighted_by_their_coverage(phantom):
    ellipses, exact = phantom
    rng = np.random.default_rng(1)
    irregular = np.sort(rng.uniform(0, 360, 400))
    geometry = ParallelGeometry(irregular, 1, N, PIXEL)
    weights = projection_weights(geometry, "cpu")
    assert float(weights.sum()) == pytest.approx(math.pi, rel=1e-6)  # the quadrature covers the half circle
    image = reconstruct(parallel_sinogram(ellipses, geometry, 2)[:, None], geometry).numpy()[0]
    assert _rmse(image, exact, _inside(N)) < 0.04


def test_reconstruction_is_differentiable_in_projections_and_axis():
    geometry = ParallelGeometry(np.linspace(0, 180, 12, endpoint=False), 1, 10, 0.1)
    volume = VolumeGrid((1, 8, 8), 0.1)
    projections = torch.rand(12, 1, 10, dtype=torch.float64)
    cor = torch.tensor(4.3, dtype=torch.float64, requires_grad=True)
    angles = torch.tensor(geometry.angles_array, requires_grad=True)

    def image(p, c, a):
        g = ParallelGeometry(a, 1, 10, 0.1, cor=c)
        return reconstruct(p, g, volume, weights=torch.full((12, 1), math.pi / 12)).sum()

    loss = image(projections, cor, angles)
    loss.backward()
    assert cor.grad is not None and torch.isfinite(cor.grad) and cor.grad != 0
    assert angles.grad is not None and torch.isfinite(angles.grad).all()
    # Linear in the projections: the gradient is the back-projection of ones, independent of the data.
    p = projections.clone().float().requires_grad_(True)
    image(p, 4.3, geometry.angles_array).backward()
    q = torch.zeros_like(p, requires_grad=True)
    image(q, 4.3, geometry.angles_array).backward()
    assert torch.allclose(p.grad, q.grad)


CONE_N, CONE_ROWS, CONE_PIXEL = 48, 8, 0.01


def _extruded(radius: float) -> Ellipsoids:
    """The 2D Shepp-Logan extruded along z (long ellipsoids): every slice is the same."""
    flat = shepp_logan(radius)
    n = len(flat.values)
    return Ellipsoids(np.c_[flat.centres, np.zeros(n)], np.c_[flat.semi_axes, np.full(n, 50.0)], flat.angles_deg,
                      flat.values)


def test_fdk_tends_to_parallel_fbp_as_the_source_recedes():
    phantom = shepp_logan_3d(CONE_N * CONE_PIXEL * 0.45)
    volume = VolumeGrid((CONE_ROWS, CONE_N, CONE_N), CONE_PIXEL)
    angles = np.linspace(0, 360, 120, endpoint=False)
    parallel_geometry = ParallelGeometry(angles, CONE_ROWS, CONE_N, CONE_PIXEL)
    parallel = reconstruct(project_ellipsoids(phantom, parallel_geometry), parallel_geometry, volume).numpy()
    differences = []
    for distance in (5.0, 50.0, 500.0):
        cone = ConeGeometry(angles, CONE_ROWS, CONE_N, CONE_PIXEL * 3, distance, 3 * distance)
        fdk = reconstruct(project_ellipsoids(phantom, cone), cone, volume).numpy()
        differences.append(np.sqrt(np.mean((fdk - parallel) ** 2)))
    assert differences[0] > 3e-3  # a near source does differ (cone-beam artifacts)
    # The difference falls like 1/distance (measured: 0.0128, 0.0020, 0.00019 /mm; ratios 6.5 and 10.3).
    assert differences[0] / differences[1] > 5 and differences[1] / differences[2] > 5
    assert differences[2] < 5e-4


def test_fdk_reconstructs_a_wide_cone_and_refuses_the_fourier_method():
    phantom = _extruded(CONE_N * CONE_PIXEL * 0.45)
    exact = rasterise(shepp_logan(CONE_N * CONE_PIXEL * 0.45), (CONE_N, CONE_N), CONE_PIXEL, 4)
    cone = ConeGeometry(np.linspace(0, 360, 180, endpoint=False), CONE_ROWS, CONE_N, 2 * CONE_PIXEL, 2.0, 4.0,
                        cor=24.2, detector_offset_px=(0.7, -0.4))
    assert math.degrees(cone.half_fan_angle_rad()) > 6
    projections = project_ellipsoids(phantom, cone)
    volume = VolumeGrid((3, CONE_N, CONE_N), CONE_PIXEL)
    slices = reconstruct(projections, cone, volume).numpy()
    assert _rmse(slices[1], exact, _inside(CONE_N)) < 0.06  # measured 0.041 (48 px: edges dominate)
    with pytest.raises(ReconInputError, match="Fourier method needs parallel-beam data; use algorithm 'fdk'"):
        reconstruct(projections, cone, algorithm="fourier")


def test_parker_weights_make_a_short_scan_equal_a_full_scan():
    phantom = _extruded(CONE_N * CONE_PIXEL * 0.45)
    full = ConeGeometry(np.arange(360.0), CONE_ROWS, CONE_N, 2 * CONE_PIXEL, 2.0, 4.0)
    fan = math.degrees(full.half_fan_angle_rad())
    projections = project_ellipsoids(phantom, full)
    volume = VolumeGrid((1, CONE_N, CONE_N), CONE_PIXEL)
    reference = reconstruct(projections, full, volume).numpy()[0]
    start = 37
    short_angles = np.arange(start, start + math.ceil(180 + 2 * fan) + 1.0)
    short = full.with_angles(short_angles)
    short_projections = projections[short_angles.astype(int) % 360]
    weighted = reconstruct(short_projections, short, volume).numpy()[0]
    mask = _inside(CONE_N)
    assert _rmse(weighted, reference, mask) < 0.006  # measured 0.0027; unweighted 0.040
    uniform = torch.full((short_angles.size, CONE_N), math.radians(1.0) * math.pi / math.radians(np.ptp(short_angles)))
    unweighted = reconstruct(short_projections, short, volume, weights=uniform).numpy()[0]
    assert _rmse(unweighted, reference, mask) > 3 * _rmse(weighted, reference, mask)
    # A ray and its conjugate (beta + pi + 2 gamma, -gamma) share weight 1.
    beta = torch.linspace(0, 0.3, 7, dtype=torch.float64)[:, None]
    gamma = torch.linspace(-0.1, 0.1, 5, dtype=torch.float64)[None, :]
    total = parker(beta, gamma, 0.15) + parker(beta + math.pi + 2 * gamma, -gamma, 0.15)
    assert torch.allclose(total, torch.ones_like(total))
    with pytest.raises(ReconInputError, match="short scan of 180 deg \\+ the fan angle"):
        reconstruct(projections[:150], full.with_angles(np.arange(150.0)), volume)


def test_a_gated_rotation_is_weighted_by_its_coverage_of_the_half_circle():
    """The gate-open frames of a gated rotation: 32 deg arcs, one in every 75 deg; the opposite side fills the gaps."""
    phantom = _extruded(CONE_N * CONE_PIXEL * 0.45)
    full = ConeGeometry(np.arange(360.0), CONE_ROWS, CONE_N, 2 * CONE_PIXEL, 2.0, 4.0)
    projections = project_ellipsoids(phantom, full)
    volume = VolumeGrid((1, CONE_N, CONE_N), CONE_PIXEL)
    reference = reconstruct(projections, full, volume).numpy()[0]
    gated_angles = np.arange(360.0)[np.arange(360) % 75 < 32]
    gated = full.with_angles(gated_angles)
    weights = projection_weights(gated, "cpu")
    assert float(weights[:, 0].sum()) == pytest.approx(math.pi, rel=1e-6)  # the quadrature covers the half circle
    image = reconstruct(projections[gated_angles.astype(int)], gated, volume).numpy()[0]
    mask = _inside(CONE_N)
    # Measured 0.079 (the arcs' hard ends streak); Parker's weights over the span, as if one arc, gave 0.164.
    assert _rmse(image, reference, mask) < 0.1
    assert image[mask].mean() == pytest.approx(reference[mask].mean(), rel=0.02)


def test_the_compiled_cone_back_projection_equals_the_differentiable_one():
    """cone_kernel.py (taken on the CPU without gradients) sums what backproject.py's torch code sums.

    71 angles: full passes of ANGLES_PER_PASS (16) and a partial one; 17 columns: a full tile and one column.
    Measured largest difference 1.12e-5 of the largest value (the one-angle-at-a-time kernel before: 1.09e-5; float32
    detector positions, mostly grid_sample's normalised coordinates); bound 3e-5.
    """
    from nanoscope_daq.recon.backproject import backproject_cone
    from nanoscope_daq.recon.cone_kernel import kernel_volume

    rng = np.random.default_rng(3)
    geometry = ConeGeometry(angles_deg=tuple(np.sort(rng.uniform(0, 360, 71))), rows=20, cols=28, pixel_mm=0.05,
                            source_sample_mm=30.0, source_detector_mm=150.0, cor=14.1,
                            detector_offset_px=(0.7, -1.3))
    volume = VolumeGrid((30, 13, 17), 0.009, (0.004, -0.01, 0.02))  # taller than the detector sees, off the axis
    filtered = torch.from_numpy(rng.standard_normal((71, 20, 28)).astype(np.float32))
    angles = torch.deg2rad(torch.tensor(geometry.angles_array, dtype=torch.float32))
    compiled = backproject_cone(filtered, angles, geometry, volume)
    differentiable = backproject_cone(filtered.clone().requires_grad_(True), angles, geometry, volume)
    assert differentiable.requires_grad and not compiled.requires_grad
    scale = differentiable.abs().max().item()
    assert scale > 0 and (compiled - differentiable.detach()).abs().max().item() < 3e-5 * scale
    # Summed into a running volume: in place in the kernel's layout, added into any other.
    for running in (torch.from_numpy(kernel_volume(volume.shape)), torch.zeros(volume.shape)):
        running += 1.0
        same = backproject_cone(filtered, angles, geometry, volume, out=running)
        assert same is running
        assert (running - 1.0 - compiled).abs().max().item() < 1e-6 * scale
