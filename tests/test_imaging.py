"""The simulated microscope's imaging: exact projections, optics, detector, the Imager contract."""

from __future__ import annotations

import dataclasses
import threading

import h5py
import numpy as np
import pytest

from nanoscope_daq.config import ConfigError, load_config
from nanoscope_daq.physics.contrast import TxmOptics, bin_samples
from nanoscope_daq.physics.geometry import ConeBeam, DetectorGrid, ParallelBeam, Pose, Rays
from nanoscope_daq.physics.materials import MATERIALS, Label, MaterialId, material_mu, property_table
from nanoscope_daq.physics.presets import tiny_leg_config
from nanoscope_daq.physics.projector import specimen_line_integrals
from nanoscope_daq.physics.remodeling import specimen_anatomy
from nanoscope_daq.physics.shapes import Capsules, Ellipsoids, ellipsoid_interval
from nanoscope_daq.sim.imaging.exposure import Exposure
from nanoscope_daq.sim.imaging.imager import Imager

UM = 1e-3


@pytest.fixture(scope="module")
def cone_imager() -> Imager:
    return Imager(tiny_leg_config(load_config()))


@pytest.fixture(scope="module")
def empty_state(cone_imager):
    """The tiny leg emptied: no tissue, no objects (tests add their own shapes)."""
    state = specimen_anatomy(cone_imager.phantom, 0.0)
    return dataclasses.replace(
        state, envelope_half_length=0.0, bone_half_length=0.0, trabeculae=Capsules.empty(), vessels=Capsules.empty(),
        vessel_is_transcortical=np.zeros(0, bool), pits=state.pits.upto(-1.0),
        lacunae=state.lacunae.subset(np.zeros(0, dtype=int)), lacuna_index=np.zeros(0, dtype=int),
    )


def _exposure(**changes) -> Exposure:
    values = dict(angle_deg=0.0, sample_offset_mm=(0.0, 0.0, 0.0), respiration_mm=0.0, force_n=0.0, day=0.0,
                  exposure_s=0.1, kv=70.0, power_w=100.0, spot_um=10.0, xrays_on=True, binning=1)
    values.update(changes)
    return Exposure(**values)


def _unit_properties(material: MaterialId) -> np.ndarray:
    """A one-channel property table that is 1 for ``material`` and 0 elsewhere: line integral = path length."""
    props = np.zeros((len(MaterialId), 1))
    props[material] = 1.0
    return props


def _sphere_scene(state, centre_mm, radius_mm):
    """A bone sphere in vacuum (a capsule of zero length)."""
    c = np.asarray([centre_mm], float)
    return dataclasses.replace(state, trabeculae=Capsules(c, c.copy(), np.array([radius_mm])))


def _chords_through_sphere(rays: Rays, centre_lab: np.ndarray, radius: float) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(rays.grid.rows), np.arange(rays.grid.cols), indexing="ij")
    start, end = rays.geometry.endpoints(rays.grid, rows, cols)
    u = (end - start) / np.linalg.norm(end - start, axis=-1, keepdims=True)
    w = centre_lab - start
    dist = np.linalg.norm(w - np.einsum("...i,...i->...", w, u)[..., None] * u, axis=-1)
    return 2 * np.sqrt(np.maximum(radius**2 - dist**2, 0.0))


# -- exact projections ----------------------------------------------------------------
@pytest.mark.parametrize("geometry", [ConeBeam(25.0, 125.0), ParallelBeam(20.0)], ids=["cone", "parallel"])
def test_uniform_sphere_projects_to_its_analytic_chord_lengths(empty_state, geometry):
    pitch = 0.011 if geometry.kind == "cone" else 0.00055
    radius = 0.03 if geometry.kind == "cone" else 0.008
    scene = _sphere_scene(empty_state, [0.2 * radius, -0.4 * radius, 0.3 * radius], radius)
    pose = Pose.of(33.0, (0.1 * radius, 0.2 * radius, 0.5), axial_strain=0.0)
    rays = Rays(geometry, DetectorGrid(64, 72, pitch), pose)
    projection = specimen_line_integrals(scene, rays, _unit_properties(MaterialId.BONE), with_canaliculi=False)[0]
    expected = _chords_through_sphere(rays, pose.to_lab(np.array([[0.2, -0.4, 0.3]]) * radius)[0], radius)
    assert np.count_nonzero(expected) > 500 and expected.max() == pytest.approx(2 * radius, rel=1e-3)
    np.testing.assert_allclose(projection, expected, atol=1e-6 * radius)


def test_cone_beam_tends_to_the_parallel_beam_at_large_distances(empty_state):
    """Same magnification, source ever farther: the cone projection converges to the parallel one as 1/distance."""
    radius = 0.02
    scene = _sphere_scene(empty_state, [0.01, 0.004, -0.006], radius)
    pose = Pose.of(20.0)
    props = _unit_properties(MaterialId.BONE)
    parallel = specimen_line_integrals(scene, Rays(ParallelBeam(10.0), DetectorGrid(48, 48, 0.0011), pose), props,
                                       False)
    errors = []
    for distance in (1e2, 1e3, 1e4, 1e5):
        rays = Rays(ConeBeam(distance, 10 * distance), DetectorGrid(48, 48, 0.011), pose)
        cone = specimen_line_integrals(scene, rays, props, False)
        errors.append(np.abs(cone - parallel).max())
    assert errors[0] > 1e-3 * 2 * radius  # a near source does differ
    assert errors[-1] < 1e-5 * 2 * radius
    np.testing.assert_allclose(np.array(errors[1:-1]) / np.array(errors[2:]), 10.0, rtol=0.1)


@pytest.mark.parametrize("geometry", [ConeBeam(25.0, 125.0), ParallelBeam(20.0)], ids=["cone", "parallel"])
def test_splatted_lacuna_matches_exact_chords_and_carries_its_volume(empty_state, geometry):
    axes, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    lacuna = Ellipsoids(np.array([[0.004, -0.003, 0.002]]), np.array([[10.0, 5.0, 3.0]]) * UM, axes[None])
    scene = dataclasses.replace(empty_state, lacunae=lacuna)
    props = _unit_properties(MaterialId.PORE_FLUID)
    to_grid = geometry.magnification if geometry.kind == "cone" else 1.0  # cone grids live on the detector

    def project(pixels: int, sample_pitch_mm: float) -> np.ndarray:
        rays = Rays(geometry, DetectorGrid(pixels, pixels, sample_pitch_mm * to_grid), Pose.of(15.0))
        return rays, specimen_line_integrals(scene, rays, props, False)[0]

    rays, splat = project(112, 0.0005)
    rows, cols = np.indices(splat.shape)
    a, d, length = rays.at(rows, cols)
    t0, t1 = ellipsoid_interval(a, d, lacuna.centres[0], lacuna.q[0])
    exact = np.maximum(t1 - t0, 0) * length
    # Cone: the ray direction is frozen at the lacuna's centre (error ~ size / source distance).
    tolerance = 2e-3 if geometry.kind == "cone" else 1e-5
    np.testing.assert_allclose(splat, exact, atol=tolerance * exact.max())
    # Pixel-integrated: the splat's mass is the lacuna's volume, even for pixels as large as the lacuna.
    assert splat.sum() * 0.0005**2 == pytest.approx(lacuna.volumes[0], rel=0.005)
    for coarse_pitch in (0.004, 0.008):
        _, coarse = project(16, coarse_pitch)
        assert coarse.sum() * coarse_pitch**2 == pytest.approx(lacuna.volumes[0], rel=0.02)


def test_coordinate_conventions_of_the_projection(empty_state):
    """+x to higher columns, +z to higher rows, counter-clockwise rotation about +z, stages in the lab."""
    geometry, grid = ParallelBeam(10.0), DetectorGrid(40, 80, 0.0011)

    def centroid(centre, pose):
        image = specimen_line_integrals(_sphere_scene(empty_state, centre, 0.006), Rays(geometry, grid, pose),
                                        _unit_properties(MaterialId.BONE), False)[0]
        rows, cols = np.indices(image.shape)
        return (rows * image).sum() / image.sum() - (grid.rows - 1) / 2, (cols * image).sum() / image.sum() - (
            grid.cols - 1) / 2

    step, px = 0.0011, 0.05  # centroids of a sampled sphere are exact to a few hundredths of a pixel
    r, c = centroid([0.02, 0.0, 0.01], Pose.of(0.0))
    assert (r, c) == pytest.approx((0.01 / step, 0.02 / step), abs=px)
    r, c = centroid([0.02, 0.0, 0.0], Pose.of(90.0))  # +x turns to +y (along the beam): on the axis
    assert c == pytest.approx(0.0, abs=px)
    r, c = centroid([0.0, 0.02, 0.0], Pose.of(90.0))  # +y turns to -x
    assert c == pytest.approx(-0.02 / step, abs=px)
    r, c = centroid([0.0, 0.0, 0.0], Pose.of(0.0, (0.01, 0.005, 3.0)))  # sx to +x, sy up, sz no effect
    assert (r, c) == pytest.approx((0.005 / step, 0.01 / step), abs=px)
    r, c = centroid([0.0, 0.0, 0.015], Pose.of(0.0, axial_strain=0.1))  # compression shortens towards z = 0
    assert r == pytest.approx(0.015 * 0.9 / step, abs=px)


# -- the Imager contract ----------------------------------------------------------------
def test_frame_shape_voxel_size_and_refusals(cone_imager):
    assert cone_imager.frame_shape(1) == (96, 144) and cone_imager.frame_shape(2) == (48, 72)
    assert cone_imager.voxel_size_um(1) == pytest.approx(11.0 / 5.0)
    assert cone_imager.voxel_size_um(4) == pytest.approx(4 * 11.0 / 5.0)
    for bad in (0, -1, 2.0, True, 64):
        with pytest.raises(ValueError, match="binning"):
            cone_imager.frame_shape(bad)
    with pytest.raises(ValueError, match="exposure_s"):
        cone_imager.render(_exposure(exposure_s=-1.0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_study_day"):
        cone_imager.render(_exposure(day=99.0), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="zernike"):
        Imager(tiny_leg_config(load_config(), geometry={"contrast": "zernike", "kind": "cone"}))


def test_darks_are_dark_flats_bright_and_projections_in_between(cone_imager):
    rng = np.random.default_rng(1)
    det = cone_imager.config.sim.detector
    dark = cone_imager.render(_exposure(xrays_on=False), rng)
    assert dark.dtype == np.uint16 and dark.shape == (96, 144)
    assert dark.mean() == pytest.approx(det.offset_counts, abs=0.5)
    read_counts = det.read_noise_e / det.electrons_per_count
    assert dark.std() == pytest.approx(np.hypot(read_counts, det.offset_fixed_pattern_counts), rel=0.15)
    assert not cone_imager.sample_in_field((3.0, 0.0, 0.0))
    assert cone_imager.sample_in_field((0.0, 0.0, 0.0)) and cone_imager.sample_in_field((0.1, 0.0, 0.0))
    flat = cone_imager.render(_exposure(sample_offset_mm=(3.0, 0.0, 0.0)), rng).astype(float)
    projection = cone_imager.render(_exposure(), rng).astype(float)
    assert flat.mean() > 20 * dark.mean()
    assert flat.min() > projection.min() and projection.mean() < 0.9 * flat.mean()
    # The specimen leaves the field sideways: the edge columns see the open beam as in the flat.
    assert projection[:, :3].mean() == pytest.approx(flat[:, :3].mean(), rel=0.02)


def test_projections_follow_angle_day_and_load(cone_imager):
    base = cone_imager.transmission(_exposure())
    turned = cone_imager.transmission(_exposure(angle_deg=90.0))
    later = cone_imager.transmission(_exposure(day=8.0))
    loaded = cone_imager.transmission(_exposure(force_n=150.0))
    for other in (turned, later, loaded):
        assert np.abs(other - base).max() > 0.02
    assert np.array_equal(cone_imager.transmission(_exposure(angle_deg=360.0 / 1e9)), base)  # snapped: same view
    # Periosteal apposition widens the bone's shadow: fewer open-beam columns by day 8.
    assert np.count_nonzero(later.mean(axis=0) < 0.9) > np.count_nonzero(base.mean(axis=0) < 0.9)


def test_photon_flux_scales_with_power_exposure_and_kv(cone_imager):
    rng = np.random.default_rng(2)
    offset = cone_imager.config.sim.detector.offset_counts
    out = (3.0, 0.0, 0.0)

    def signal(**changes):
        return cone_imager.render(_exposure(sample_offset_mm=out, **changes), rng).mean() - offset

    reference = signal(power_w=50.0, exposure_s=0.05)
    assert signal(power_w=100.0, exposure_s=0.05) == pytest.approx(2 * reference, rel=0.01)
    assert signal(power_w=50.0, exposure_s=0.1) == pytest.approx(2 * reference, rel=0.01)
    assert signal(power_w=50.0, exposure_s=0.05, kv=40.0) < 0.9 * reference


def test_detector_noise_is_shot_noise_plus_read_noise(cone_imager):
    """Pairs of flats: var(difference)/2 matches N E[g+g^2] / k^2 + read^2 / k^2 (fixed patterns cancel)."""
    det = cone_imager.config.sim.detector
    beam = cone_imager._beam(70.0)
    rng = np.random.default_rng(3)
    for exposure_s in (0.0005, 0.02):  # ~20 photons/pixel (Poisson path) and ~800 (Gaussian path)
        e = _exposure(sample_offset_mm=(3.0, 0.0, 0.0), exposure_s=exposure_s)
        photons = cone_imager._flux_map(1, 70.0) * e.power_w * e.exposure_s
        frames = [cone_imager.render(e, rng).astype(float) for _ in range(6)]
        pair_var = np.mean([np.var(frames[i] - frames[i + 1]) / 2 for i in range(0, 6, 2)])
        model = cone_imager.detector.noise_variance_counts(photons, beam, exposure_s, 1).mean() + 1 / 12
        assert pair_var == pytest.approx(model, rel=0.04)
        mean_signal = np.mean(frames) - det.offset_counts
        assert mean_signal == pytest.approx(photons.mean() * beam.electrons_per_quantum / det.electrons_per_count,
                                            rel=0.01)
    dark = [cone_imager.render(_exposure(xrays_on=False), rng).astype(float) for _ in range(2)]
    read_var = (det.read_noise_e / det.electrons_per_count) ** 2 + 1 / 12
    assert np.var(dark[0] - dark[1]) / 2 == pytest.approx(read_var, rel=0.08)


@pytest.mark.parametrize(("exposure_s", "fewest", "most"), [
    (0.0001, 1, 10),  # Poisson photon counts
    (0.0005, 5, 100),  # Poisson and skew-corrected normal photon counts
    (0.02, 100, 1000),  # one Gaussian
])
def test_each_pixel_over_time_has_the_models_mean_and_variance_and_noise_never_repeats(cone_imager, exposure_s,
                                                                                       fewest, most):
    """64 frames of one projection: per pixel, the mean over time is the ideal signal and the variance
    over time is shot + dark + read noise (+ 1/12 of rounding), at every signal level; residuals of
    different frames, and of neighbouring pixels, are uncorrelated."""
    e = _exposure(angle_deg=30.0, exposure_s=exposure_s)
    rng = np.random.default_rng(11)
    frames = np.stack([cone_imager.render(e, rng) for _ in range(64)]).astype(np.float64)
    det, beam = cone_imager.detector, cone_imager._beam(e.kv)
    photons = cone_imager._flux_map(1, e.kv) * e.power_w * e.exposure_s * cone_imager.transmission(e)
    scale = 1.0 / det.config.electrons_per_count
    dark_e = det.config.dark_current_e_per_s * exposure_s
    expected = (photons * beam.electrons_per_quantum + dark_e) * scale + det.offset_map(1)
    model_var = det.noise_variance_counts(photons, beam, exposure_s, 1) + 1 / 12
    assert fewest < photons.min() and photons.max() < most
    # The mean over time, per pixel, within its sampling error.
    z = (frames.mean(axis=0) - expected) / np.sqrt(model_var / len(frames))
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.05)
    # The variance over time, per pixel, in ten groups of pixels from dark to bright.
    observed = frames.var(axis=0, ddof=1)
    groups = np.array_split(np.argsort(model_var, axis=None), 10)
    for group in groups:
        assert observed.ravel()[group].mean() == pytest.approx(model_var.ravel()[group].mean(), rel=0.04)
    # No noise repeats: residuals of every pair of frames, and of neighbouring pixels, are uncorrelated.
    residual = ((frames - frames.mean(axis=0)) / np.sqrt(model_var)).reshape(len(frames), -1)
    correlation = np.corrcoef(residual)
    bound = 5 / np.sqrt(residual.shape[1])
    assert np.abs(correlation[np.triu_indices(len(frames), 1)]).max() < bound + 1 / len(frames)
    one = residual[0].reshape(photons.shape)
    assert abs(np.corrcoef(one[:, 1:].ravel(), one[:, :-1].ravel())[0, 1]) < bound
    assert abs(np.corrcoef(one[1:].ravel(), one[:-1].ravel())[0, 1]) < bound


def test_saturation_clips_at_the_bit_depth_and_binning_sums_or_averages():
    rng = np.random.default_rng(4)
    out = (3.0, 0.0, 0.0)
    imager16 = Imager(tiny_leg_config(load_config()))
    det = imager16.config.sim.detector
    full = imager16.render(_exposure(sample_offset_mm=out, exposure_s=5.0), rng)
    well = det.full_well_e / det.electrons_per_count + det.offset_counts  # the pixels fill before the 16-bit ADC
    assert full.std() < 3 * det.offset_fixed_pattern_counts and full.mean() == pytest.approx(well, abs=2)
    imager12 = Imager(tiny_leg_config(load_config(), sim={"detector": {"bit_depth": 12}}))
    assert np.all(imager12.render(_exposure(sample_offset_mm=out, exposure_s=1.0), rng) == 4095)
    summed = Imager(tiny_leg_config(load_config(), sim={"detector": {"binning_mode": "sum"}}))
    averaged = Imager(tiny_leg_config(load_config(), sim={"detector": {"binning_mode": "average"}}))
    e1 = _exposure(sample_offset_mm=out, exposure_s=0.01)
    e2 = _exposure(sample_offset_mm=out, exposure_s=0.01, binning=2)
    one = summed.render(e1, rng).mean()
    assert summed.render(e2, rng).mean() == pytest.approx(4 * one, rel=0.02)
    assert averaged.render(e2, rng).mean() == pytest.approx(averaged.render(e1, rng).mean(), rel=0.02)


def test_rendering_is_seeded_and_deterministic(cone_imager):
    e = _exposure(angle_deg=12.0, respiration_mm=0.003)
    a = cone_imager.render(e, np.random.default_rng(7))
    b = Imager(tiny_leg_config(load_config())).render(e, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, cone_imager.render(e, np.random.default_rng(8)))


def _largest_step(image: np.ndarray) -> float:
    """Largest intensity change between neighbouring pixels: what a one-pixel error could cost."""
    return max(np.abs(np.diff(image, axis=0)).max(), np.abs(np.diff(image, axis=1)).max())


def test_the_focal_spot_the_source_is_set_to_blurs_the_projection(cone_imager):
    """The spot blurs by spot * (M - 1) at the detector; more power than the spot takes enlarges it."""
    source = cone_imager.config.source
    small, large = source.spot_min_um, 4 * source.spot_min_um
    sharp = cone_imager.transmission(_exposure(spot_um=small, power_w=small * source.power_per_um_spot_w))
    soft = cone_imager.transmission(_exposure(spot_um=large, power_w=small * source.power_per_um_spot_w))
    assert _largest_step(sharp) > 1.5 * _largest_step(soft)
    overdriven = cone_imager.transmission(_exposure(spot_um=small, power_w=large * source.power_per_um_spot_w))
    assert np.array_equal(overdriven, soft)


def test_breathing_moves_the_specimen_as_an_exact_projection_would(cone_imager):
    e = _exposure(angle_deg=40.0, respiration_mm=0.03)
    shifted = cone_imager.transmission(e)
    view = cone_imager.snap(e)
    margin = cone_imager.margin_px(1)
    breathing = e.respiration_mm * cone_imager.respiration_direction
    exact = cone_imager.ideal_view(view, margin, breathing)[margin:-margin, margin:-margin]
    still = cone_imager.transmission(_exposure(angle_deg=40.0))
    moved = np.abs(still - exact).max()
    assert moved > 0.1  # the breath moves the bone's edges by several pixels
    assert np.abs(shifted - exact).max() < 0.1 * moved
    # A breath far beyond the cached margin is imaged at its own breathing step, as exactly.
    big = _exposure(angle_deg=40.0, respiration_mm=0.2)
    far = cone_imager.ideal_view(cone_imager.snap(big), margin, 0.2 * cone_imager.respiration_direction)
    far = far[margin:-margin, margin:-margin]
    tolerance = cone_imager.config.sim.detector.breathing_tolerance_px
    assert np.abs(cone_imager.transmission(big) - far).max() < (tolerance + 0.25) * _largest_step(far)


def test_a_cached_view_equals_a_fresh_exact_render_of_the_same_state():
    """The next turn of a time series (angle + 360 degrees, within the snapping quantum) at another
    breathing displacement renders from the cache; against the exact projection of that very state
    no feature is off by more than half the angle quantum plus ``breathing_tolerance_px`` (plus
    bilinear interpolation: a quarter step), and frames from the cache and from the exact view
    differ by noise alone. (A fine breathing tolerance puts the steps within one breath of the tiny leg.)"""
    cone_imager = Imager(tiny_leg_config(load_config(), sim={"detector": {"breathing_tolerance_px": 0.05}}))
    det_config = cone_imager.config.sim.detector
    tolerance = det_config.render_tolerance_px / 2 + det_config.breathing_tolerance_px
    quantum = cone_imager.breathing_quantum_mm(1)
    first = _exposure(angle_deg=21.0, respiration_mm=2.2 * quantum)
    cone_imager.transmission(first)
    hits = cone_imager._cache.hits
    again = _exposure(angle_deg=381.0 + 1e-4, respiration_mm=1.8 * quantum)  # same step of breath, next turn
    cached = cone_imager.transmission(again)
    assert cone_imager._cache.hits == hits + 1
    margin = cone_imager.margin_px(1)
    exact_state = dataclasses.replace(cone_imager.snap(again), angle_deg=21.0 + 1e-4)
    exact = cone_imager.ideal_view(exact_state, margin, again.respiration_mm * cone_imager.respiration_direction)
    exact = exact[margin:-margin, margin:-margin]
    assert np.abs(cached - exact).max() < (tolerance + 0.25) * _largest_step(exact)
    # Within noise: the difference of a frame from the cache and one from the exact view is pure noise.
    det, beam = cone_imager.detector, cone_imager._beam(again.kv)
    photons = cone_imager._flux_map(1, again.kv) * again.power_w * again.exposure_s
    rng = np.random.default_rng(5)
    from_cache = cone_imager.render(again, rng).astype(float)
    from_exact = det.read(photons, beam, again.exposure_s, 1, rng, exact).astype(float)
    noise_var = det.noise_variance_counts(photons * exact, beam, again.exposure_s, 1) + 1 / 12
    z = (from_cache - from_exact) / np.sqrt(2 * noise_var)
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and z.std() == pytest.approx(1.0, abs=0.03)


def test_warm_up_builds_the_maps_of_a_setting_without_a_view_and_leaves_frames_unchanged():
    fresh = Imager(tiny_leg_config(load_config()))
    e = _exposure(angle_deg=33.0, binning=2)
    fresh.warm_up(e)
    assert fresh.views_rendered == 0
    assert {("gain", 2), ("offset", 2), ("readout_offset", 2)} <= set(fresh.detector._maps)
    cold = Imager(tiny_leg_config(load_config()))
    assert np.array_equal(fresh.render(e, np.random.default_rng(3)), cold.render(e, np.random.default_rng(3)))


def test_views_are_cached_within_a_bounded_memory(cone_imager):
    cache = cone_imager._cache
    e = _exposure(angle_deg=77.0)
    cone_imager.transmission(e)
    hits = cache.hits
    cone_imager.transmission(_exposure(angle_deg=77.0, respiration_mm=0.002))
    assert cache.hits == hits + 1
    for angle in range(0, 360, 10):
        cone_imager.transmission(_exposure(angle_deg=float(angle)))
    assert cache._bytes <= cache.max_bytes


def test_concurrent_renders_from_two_threads_match_sequential_ones():
    imager = Imager(tiny_leg_config(load_config()))
    exposures = [_exposure(angle_deg=a) for a in (5.0, 65.0, 5.0, 125.0)]
    results: dict[int, np.ndarray] = {}

    def work(i):
        results[i] = imager.render(exposures[i], np.random.default_rng(i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sequential = Imager(tiny_leg_config(load_config()))
    for i, e in enumerate(exposures):
        assert np.array_equal(results[i], sequential.render(e, np.random.default_rng(i)))


# -- Zernike phase contrast -----------------------------------------------------------------
def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def _filtered_backprojection(projection: np.ndarray, angles: int = 120) -> np.ndarray:
    """Slice of a rotation-symmetric object from its one projection (ramp filter, linear back-projection)."""
    n = projection.size
    filtered = np.real(np.fft.ifft(np.fft.fft(projection) * np.abs(np.fft.fftfreq(n))))
    x = np.arange(n) - (n - 1) / 2
    xx, yy = np.meshgrid(x, x)
    out = np.zeros((n, n))
    for theta in np.linspace(0, np.pi, angles, endpoint=False):
        out += np.interp(xx * np.cos(theta) + yy * np.sin(theta) + (n - 1) / 2, np.arange(n), filtered)
    return out * np.pi / angles


def test_zernike_halo_and_shade_off_defeat_a_global_threshold(empty_state, cone_imager):
    """A trabecula (bone rod, r = 15 um) through the TXM: Otsu on the reconstructed slice."""
    config = cone_imager.config
    radius, pitch, energy = 0.015, 0.00055, 9.2436
    scene = dataclasses.replace(empty_state, trabeculae=Capsules(np.array([[0, 0, -1.0]]), np.array([[0, 0, 1.0]]),
                                                                 np.array([radius])))
    rays = Rays(ParallelBeam(20.0), DetectorGrid(4, 256, pitch / 2), Pose.of(0.0))
    lines = specimen_line_integrals(scene, rays, property_table(energy, with_phase=True), False)
    x = (np.arange(128) - 63.5) * pitch
    xx, yy = np.meshgrid(x, x)
    rod = np.hypot(xx, yy) < radius
    errors, slices = {}, {}
    for zernike in (False, True):
        optics = TxmOptics(config.sim.optics, energy, zernike)
        image = bin_samples(optics.image(lines[0], lines[1], pitch / 2), 2)[0]
        slices[zernike] = _filtered_backprojection(-np.log(image / optics.open_beam))
        errors[zernike] = np.mean((slices[zernike] > _otsu(slices[zernike].ravel())) != rod)
    assert errors[False] < 0.01
    assert errors[True] > 0.05 and errors[True] > 10 * errors[False]
    zernike = slices[True]
    assert zernike[~rod].max() > zernike[rod].mean()  # halo: brighter outside than the rod itself
    # Shade-off: the uniform rod no longer reconstructs uniform (absorption: flat to a few percent).
    inner = np.hypot(xx, yy) < 0.8 * radius
    variation = {z: slices[z][inner].std() / abs(slices[z][inner].mean()) for z in slices}
    assert variation[False] < 0.05 and variation[True] > 0.3


def test_zernike_imager_shows_the_ring_and_a_halo_at_the_specimen_edge():
    imager = Imager(tiny_leg_config(load_config(), geometry={"kind": "parallel", "contrast": "zernike"},
                                    detector={"pixels_x": 560, "pixels_y": 16}))
    image = imager.transmission(_exposure())
    open_beam = imager.open_beam
    assert 0.3 < open_beam < 1  # tau^2 of a gold ring thick enough for a quarter-wave delay
    assert imager.transmission(_exposure(sample_offset_mm=(3.0, 0.0, 0.0))) == open_beam
    state = specimen_anatomy(imager.phantom, 0.0)
    x = (np.arange(image.shape[1]) + 0.5 - image.shape[1] / 2) * imager.sample_pitch_mm(1)
    gap = np.abs(x - state.envelope.cx) - state.envelope.a
    assert image[:, (gap > 0) & (gap < 0.005)].max() > 1.1 * open_beam  # bright halo just outside
    assert np.allclose(image[:, (gap > 0.01) & (np.abs(x) < x.max() - 0.01)], open_beam, rtol=0.05)


# -- ground truth ------------------------------------------------------------------------
def test_ground_truth_file_holds_labels_attenuation_and_what_was_applied(cone_imager, tmp_path):
    path = tmp_path / "day3" / "ground_truth.h5"
    cone_imager.render(_exposure(kv=50.0), np.random.default_rng(0))
    cone_imager.write_ground_truth(path, 3.0, 2)
    energy = cone_imager.energy_kev(50.0)
    with h5py.File(path) as h5:
        labels, attenuation = h5["labels"][:], h5["attenuation"][:]
        assert labels.shape == (48, 72, 72) and labels.dtype == np.uint8
        assert attenuation.dtype == np.float32 and attenuation.shape == labels.shape
        assert h5["labels"].attrs["voxel_size_um"] == pytest.approx(cone_imager.voxel_size_um(2))
        assert h5["attenuation"].attrs["energy_kev"] == pytest.approx(energy)
        assert set(np.unique(labels)) <= {int(v) for v in Label}
        # Voxels of one material all around carry that material's mu.
        mu_bone = material_mu(MaterialId.BONE, energy)
        solid = (labels == Label.BONE)
        assert np.median(attenuation[solid]) == pytest.approx(mu_bone, rel=1e-5)
        assert np.all(attenuation[labels == Label.BACKGROUND] <= mu_bone)
        names = [n.decode() if isinstance(n, bytes) else n for n in h5["materials/name"][:]]
        assert names[MaterialId.BONE] == MATERIALS[MaterialId.BONE].name
        volumes = h5["volumes"].attrs
        assert 0 < volumes["porosity"] < 0.05 and volumes["lacunae_count"] == h5["lacunae"].attrs["count"]
        assert h5["lacunae/centres_mm"].shape == (h5["lacunae"].attrs["count"], 3)
        assert h5["remodeling"].attrs["day"] == 3.0 and h5["remodeling"].attrs["formed_mm3"] > 0
        assert h5["remodeling/pits/day"].shape[0] == h5["remodeling"].attrs["pit_count"]
        assert h5["provenance"].attrs["seed"] == cone_imager.config.sim.seed
        assert '"lacuna_density_per_mm3"' in h5["provenance"].attrs["config_json"]
        assert h5["provenance"].attrs["day_requested"] == 3.0
