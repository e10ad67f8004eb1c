"""Centre of rotation: 0/180 registration refined by half-turn negativity, within 0.25 px."""

from __future__ import annotations

import numpy as np
import pytest

from nanoscope_daq.recon import ConeGeometry, ParallelGeometry, find_cor
from nanoscope_daq.recon.cor import opposite_pairs
from nanoscope_daq.recon.phantoms import Ellipses, Ellipsoids, parallel_sinogram, project_ellipsoids, shepp_logan

N, PIXEL = 128, 0.01


pytestmark = pytest.mark.torch_threads(1)


@pytest.mark.parametrize(("axis", "span", "count"), [
    (63.5, 180, 180),    # centred, half turn without its 180 deg projection
    (66.37, 180, 181),   # 0 and 180 both measured
    (60.81, 360, 360),   # full turn
    (55.6, 360, 200),    # full turn, coarse
    (70.1, 200, 150),    # overscan
    (64.9, 180, 90),     # 2 deg steps
])
def test_axis_is_found_within_a_quarter_pixel_in_noisy_shifted_sinograms(axis, span, count):
    rng = np.random.default_rng(count)
    base = shepp_logan(N * PIXEL * 0.4)
    phantom = Ellipses(base.centres + rng.uniform(-0.12, 0.12, 2), base.semi_axes, base.angles_deg, base.values)
    angles = np.linspace(0, span, count, endpoint=(count == 181)) + rng.normal(0, 0.05, count)  # measured angles
    geometry = ParallelGeometry(angles, 1, N, PIXEL, cor=axis)
    sinogram = parallel_sinogram(phantom, geometry, 2)[:, None]
    sinogram += rng.normal(0, 0.03 * sinogram.max(), sinogram.shape)
    found = find_cor(sinogram, geometry.with_cor(None))
    assert found.cor == pytest.approx(axis, abs=0.25)  # measured: within 0.06 px
    assert found.registration == pytest.approx(axis, abs=0.5)
    assert found.metric.argmin() not in (0, len(found.metric) - 1)  # a real minimum, not the search's edge


def test_without_opposite_projections_a_wide_search_still_finds_the_axis():
    phantom = shepp_logan(N * PIXEL * 0.4)
    angles = np.linspace(0, 170, 120)  # no pair 180 deg apart
    assert opposite_pairs(angles, 1.5 * (170 / 119)) == []
    geometry = ParallelGeometry(angles, 1, N, PIXEL, cor=67.2)
    found = find_cor(parallel_sinogram(phantom, geometry, 2)[:, None], geometry.with_cor(None))
    assert found.registration is None
    assert found.cor == pytest.approx(67.2, abs=0.25)


def test_cone_beam_axis_offset_is_found():
    flat = shepp_logan(48 * 0.01 * 0.42)
    n = len(flat.values)
    phantom = Ellipsoids(np.c_[flat.centres, np.zeros(n)], np.c_[flat.semi_axes, np.full(n, 50.0)], flat.angles_deg,
                         flat.values)
    geometry = ConeGeometry(np.linspace(0, 360, 180, endpoint=False), 6, 48, 0.02, 4.0, 8.0, cor=25.3)
    projections = project_ellipsoids(phantom, geometry)
    found = find_cor(projections, geometry.with_cor(None))
    assert found.cor == pytest.approx(25.3, abs=0.25)
