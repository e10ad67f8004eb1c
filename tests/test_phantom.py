"""The analytic mouse-bone phantom: shapes, lacunae, remodelling, and the ground truth's exact numbers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.spatial import cKDTree

from nanoscope_daq.config import load_config
from nanoscope_daq.physics.materials import Label
from nanoscope_daq.physics.phantom import Phantom
from nanoscope_daq.physics.presets import tiny_leg_config
from nanoscope_daq.physics.remodeling import specimen_anatomy
from nanoscope_daq.physics.shapes import (
    Ellipse,
    Ellipsoids,
    capsule_interval,
    ellipsoid_cap_fraction,
    ellipsoid_interval,
    segment_distance,
)
from nanoscope_daq.physics.volumes import (
    ellipsoid_ring_volume,
    horizontal_capsule_ring_volume,
    ring_area_in_rectangle,
)
from nanoscope_daq.sim.imaging.imager import Imager

UM = 1e-3


@pytest.fixture(scope="module")
def default_phantom() -> Phantom:
    return Phantom(load_config().sim.phantom, seed=0)


def _random_rays(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays from random starts aimed at random points near the origin (most hit, some miss)."""
    a = rng.uniform(-3, 3, (n, 3))
    return a, rng.uniform(-1.5, 1.5, (n, 3)) - a


# -- shapes against closed forms ------------------------------------------------------
def test_ellipsoid_chords_match_the_unit_sphere_closed_form():
    """Chord through x^T Q x <= 1 equals |D| * 2 sqrt(1 - dist^2) / |L D| in the frame where it is a ball."""
    rng = np.random.default_rng(1)
    semi = np.array([1.3, 0.7, 0.4])
    q_rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    centre = np.array([0.2, -0.1, 0.3])
    q = q_rot @ np.diag(1 / semi**2) @ q_rot.T
    a, d = _random_rays(rng, 2000)
    t0, t1 = ellipsoid_interval(a, d, centre, q)
    chord = np.maximum(t1 - t0, 0) * np.linalg.norm(d, axis=1)
    # Map to the unit ball: y = diag(1/semi) R^T (x - c); distances along the ray scale by |L d| / |d|.
    to_ball = np.diag(1 / semi) @ q_rot.T
    ya, yd = (a - centre) @ to_ball.T, d @ to_ball.T
    yd_len = np.linalg.norm(yd, axis=1)
    closest = np.linalg.norm(ya - (np.einsum("ni,ni->n", ya, yd) / yd_len**2)[:, None] * yd, axis=1)
    expected = np.where(closest < 1, 2 * np.sqrt(np.maximum(1 - closest**2, 0)) / yd_len, 0) * np.linalg.norm(d, axis=1)
    assert np.count_nonzero(expected) > 200
    np.testing.assert_allclose(chord, expected, atol=1e-12)


def test_capsule_and_elliptic_cylinder_chords_match_closed_forms():
    r, p0, p1 = 0.5, np.array([0.0, 0.0, -1.0]), np.array([0.0, 0.0, 1.0])
    # Perpendicular to the axis through the cylinder at distance h: 2 sqrt(r^2 - h^2).
    h = np.linspace(-0.6, 0.6, 24)  # no ray exactly tangent
    a = np.column_stack([np.full_like(h, -5.0), h, np.full_like(h, 0.3)])
    d = np.tile([10.0, 0.0, 0.0], (h.size, 1))
    t0, t1 = capsule_interval(a, d, p0, p1, r)
    np.testing.assert_allclose(np.maximum(t1 - t0, 0) * 10, 2 * np.sqrt(np.maximum(r**2 - h**2, 0)), atol=1e-12)
    # Along the axis: the length plus both caps.
    t0, t1 = capsule_interval(np.array([0.0, 0.0, -5.0]), np.array([0.0, 0.0, 10.0]), p0, p1, r)
    assert (t1 - t0) * 10 == pytest.approx(2.0 + 2 * r, abs=1e-12)
    # Through a cap only, off-axis: sphere chord.
    t0, t1 = capsule_interval(np.array([-5.0, 0.3, 1.2]), np.array([10.0, 0.0, 0.0]), p0, p1, r)
    assert (t1 - t0) * 10 == pytest.approx(2 * np.sqrt(r**2 - 0.3**2 - 0.2**2), abs=1e-12)
    # Elliptic cylinder: a ray along x at height y crosses 2 a sqrt(1 - y^2/b^2).
    ell = Ellipse(0.1, -0.2, 0.8, 0.5)
    y = np.linspace(-0.76, 0.36, 23)  # no ray exactly tangent
    t0, t1 = ell.xy_interval(np.full_like(y, -3.0), y, np.full_like(y, 6.0), np.zeros_like(y))
    expected = 2 * 0.8 * np.sqrt(np.maximum(1 - ((y + 0.2) / 0.5) ** 2, 0))
    np.testing.assert_allclose(np.maximum(t1 - t0, 0) * 6, expected, atol=1e-12)


def test_volume_formulas_are_exact():
    rng = np.random.default_rng(2)
    semi = rng.uniform(0.2, 1.0, (50, 3))
    rot = np.array([np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(50)])
    ell = Ellipsoids(rng.normal(size=(50, 3)), semi, rot)
    q_inv = np.linalg.inv(ell.q)
    normal = np.array([0.0, 0.0, 1.0])
    # A plane through each centre halves it; planes beyond the extent keep all or nothing.
    for i in range(5):
        half = ellipsoid_cap_fraction(ell.centres[i:i + 1], q_inv[i:i + 1], normal, ell.centres[i, 2])[0]
        assert half == pytest.approx(0.5)
    top = ell.centres[:, 2] + ell.half_extents[:, 2]
    np.testing.assert_allclose(ellipsoid_cap_fraction(ell.centres, q_inv, normal, top + 1e-9), 1.0)
    # Cap fraction against a fine Monte Carlo of one tilted ellipsoid.
    i, cut = 3, ell.centres[3, 2] + 0.3 * ell.half_extents[3, 2]
    u = rng.normal(size=(400_000, 3))
    u *= (rng.random(400_000) ** (1 / 3) / np.linalg.norm(u, axis=1))[:, None]
    pts = ell.centres[i] + (u * semi[i]) @ rot[i].T
    assert ellipsoid_cap_fraction(ell.centres[i:i + 1], q_inv[i:i + 1], normal, cut)[0] == pytest.approx(
        np.mean(pts[:, 2] <= cut), abs=3e-3)
    # Ring areas and in-ring volumes.
    outer, inner = Ellipse(0, 0, 2.0, 1.0), Ellipse(0, 0, 1.0, 0.5)
    assert ring_area_in_rectangle(outer, inner, -5, 5, -5, 5) == pytest.approx(np.pi * (2 - 0.5), rel=1e-6)
    assert ring_area_in_rectangle(outer, None, 0, 5, -5, 5) == pytest.approx(np.pi, rel=1e-6)
    big = Ellipse(0, 0, 10, 10)
    assert ellipsoid_ring_volume(np.array([5.0, 0, 0]), np.array([1.0, 0]), np.array([0.3, 0.5, 0.7]), big,
                                 Ellipse(0, 0, 1, 1)) == pytest.approx(4 / 3 * np.pi * 0.3 * 0.5 * 0.7, rel=1e-8)
    capsule = np.pi * 0.2**2 * 2 + 4 / 3 * np.pi * 0.2**3
    assert horizontal_capsule_ring_volume(np.array([2.0, 0, 0]), np.array([4.0, 0, 0]), 0.2, big,
                                          Ellipse(0, 0, 1, 1)) == pytest.approx(capsule, rel=1e-8)


# -- lacunae ----------------------------------------------------------------------------
def test_lacunae_have_the_configured_sizes_orientation_and_a_realistic_density(default_phantom):
    c = default_phantom.config
    state = specimen_anatomy(default_phantom, 0.0)
    lac = state.lacunae
    assert len(lac) > 100_000
    lengths_um = 2 * lac.semi_axes / UM
    assert lengths_um[:, 0].min() >= 2 * c.lacuna_long_semi_axis_min_um - 1e-6
    assert lengths_um[:, 0].max() <= 2 * c.lacuna_long_semi_axis_max_um + 1e-6
    assert lengths_um.min() >= 5.0 - 1e-6 and lengths_um.max() <= 20.0 + 1e-6  # 5-20 um ellipsoids
    tilt = np.degrees(np.arccos(np.abs(lac.rotations[:, 2, 0])))
    assert tilt.max() <= c.lacuna_tilt_max_deg + 1e-6
    bone_tissue = state.cortical_area_mm2 * 2 * state.bone_half_length
    density = len(lac) / bone_tissue
    assert 2e4 <= density <= 9e4
    # No two lacunae overlap: points on each surface stay outside its near neighbours.
    tree = cKDTree(lac.centres)
    pairs = tree.query_pairs(2 * c.lacuna_long_semi_axis_max_um * UM, output_type="ndarray")
    assert len(pairs) > 1000
    dirs = np.random.default_rng(0).normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    q = lac.q
    for i, j in pairs[:3000]:
        surface = lac.centres[i] + dirs / np.sqrt(np.einsum("ki,ij,kj->k", dirs, q[i], dirs))[:, None]
        w = surface - lac.centres[j]
        assert np.all(np.einsum("ki,ij,kj->k", w, q[j], w) > 1.0)
    # Every lacuna lies in the cortex, clear of the vessels.
    x, y = lac.centres[:, 0], lac.centres[:, 1]
    reach = lac.semi_axes[:, 0]
    assert np.all(state.periosteum.clearance_inside(x, y) >= reach)
    assert np.all(-state.endosteum.clearance_inside(x, y) >= reach)
    for k in range(len(state.vessels)):
        gap = segment_distance(lac.centres, state.vessels.p0[k], state.vessels.p1[k]) - state.vessels.radii[k]
        assert np.all(gap >= reach)


def test_canaliculi_touch_their_lacuna_stay_apart_and_are_resolved_only_at_fine_voxels(default_phantom):
    ph = default_phantom
    assert ph.canaliculi_resolved(0.2) and ph.canaliculi_resolved(0.3)
    assert not ph.canaliculi_resolved(0.5) and not ph.canaliculi_resolved(2.2)
    index = np.arange(200)
    caps = ph.canaliculi(index)
    r = ph.canaliculus_radius
    assert len(caps) > 150 * 8
    assert np.allclose(caps.radii, r) and np.all(caps.lengths <= ph.config.canaliculus_length_um * UM + 1e-12)
    # The same lacunae give the same canaliculi whichever subset is asked.
    part = ph.canaliculi(index[150:]).p0
    assert np.all(np.min(np.linalg.norm(part[:, None, :] - caps.p0[None], axis=2), axis=1) < 1e-15)
    # Each capsule's start cap touches its lacuna in one point: p0 - r n lies on the lacuna's surface.
    lac = ph.lacunae.ellipsoids.subset(index)
    owner = np.argmin(np.linalg.norm(caps.p0[:, None, :] - lac.centres[None], axis=2), axis=1)
    normal = (caps.p1 - caps.p0) / caps.lengths[:, None]
    np.testing.assert_allclose(lac.subset(owner).scale_of(caps.p0 - r * normal), 1.0, atol=1e-9)
    # Starts of one lacuna's canaliculi are far enough apart that no two capsules touch.
    for k in range(len(lac)):
        starts = caps.p0[owner == k]
        gaps = np.linalg.norm(starts[:, None] - starts[None], axis=2) + np.eye(len(starts)) * 1.0
        assert np.all(gaps >= 2 * r)


def test_phantom_is_seeded_and_deterministic():
    config = tiny_leg_config(load_config()).sim.phantom
    a, b, other = Phantom(config, 5), Phantom(config, 5), Phantom(config, 6)
    assert np.array_equal(a.lacunae.ellipsoids.centres, b.lacunae.ellipsoids.centres)
    assert np.array_equal(a.pits.days, b.pits.days) and np.array_equal(a.vessels.p0, b.vessels.p0)
    assert not np.array_equal(a.lacunae.ellipsoids.centres[:10], other.lacunae.ellipsoids.centres[:10])


# -- remodelling ------------------------------------------------------------------------
def test_formed_volume_equals_rate_times_surface_times_days(default_phantom):
    days = 10.0
    record = specimen_anatomy(default_phantom, days).record
    expected = (record.periosteal_mar_um_per_day * UM * record.surface_periosteal_mm2
                + record.endosteal_mar_um_per_day * UM * (record.surface_endosteal_mm2 + record.surface_trabecular_mm2)
                ) * days
    assert record.formed_mm3 == pytest.approx(expected, rel=0.03)
    assert record.pit_count == len(default_phantom.pits.upto(days))
    assert record.resorbed_mm3 == pytest.approx(record.pit_resorbed_mm3.sum())
    assert record.lacunae_added > 0  # bone formed since day 0 holds new osteocytes


def test_rasterised_bone_change_matches_the_applied_formation(tmp_path):
    """Labels of day 6 minus day 0: the bone formed in the grid's box, within a few percent."""
    config = tiny_leg_config(load_config(), sim={"phantom": {"pits_per_day": 0.0, "transcortical_canal_count": 0}},
                             geometry={"source_detector_mm": 250.0}, detector={"pixels_x": 288, "pixels_y": 48})
    imager = Imager(config)
    tissue = {}
    for day in (0.0, 6.0):
        path = tmp_path / f"gt{day:g}.h5"
        imager.write_ground_truth(path, day, 1)
        with h5py.File(path) as h5:
            labels = h5["labels"][:]
            voxel = h5["labels"].attrs["voxel_size_um"] * UM
            tissue[day] = (np.count_nonzero((labels == Label.BONE) | (labels == Label.LCN_PORE)) * voxel**3,
                           h5["volumes"].attrs["bone_tissue_mm3"], dict(h5["remodeling"].attrs))
    height = config.detector.pixels_y * voxel
    record = tissue[6.0][2]
    formed_in_box = record["formed_mm3"] * height / config.sim.phantom.bone_length_mm
    assert tissue[6.0][1] - tissue[0.0][1] == pytest.approx(formed_in_box, rel=1e-3)
    assert tissue[6.0][0] - tissue[0.0][0] == pytest.approx(formed_in_box, rel=0.02)


def test_resorption_pits_remove_exactly_the_bone_they_report(tmp_path):
    config = tiny_leg_config(load_config(),
                             sim={"phantom": {"periosteal_mar_um_per_day": 0.0, "endosteal_mar_um_per_day": 0.0,
                                              "pits_per_day": 3.0, "transcortical_canal_count": 0,
                                              "bone_length_mm": 0.22}},
                             detector={"pixels_y": 112})
    imager = Imager(config)
    state = specimen_anatomy(imager.phantom, 10.0)
    assert state.record.pit_count >= 10 and state.record.resorbed_mm3 > 0
    # No surviving lacuna touches a pit.
    for i in range(len(state.pits)):
        w = state.lacunae.centres - state.pits.ellipsoids.centres[i]
        s = np.sqrt(np.einsum("ni,ij,nj->n", w, state.pits.ellipsoids.q[i], w))
        assert np.all(s > 1.0)
    measured = {}
    for day in (0.0, 10.0):
        path = tmp_path / f"gt{day:g}.h5"
        imager.write_ground_truth(path, day, 1)
        with h5py.File(path) as h5:
            labels = h5["labels"][:]
            voxel = h5["labels"].attrs["voxel_size_um"] * UM
            measured[day] = (np.count_nonzero((labels == Label.BONE) | (labels == Label.LCN_PORE)) * voxel**3,
                             h5["volumes"].attrs["bone_tissue_mm3"], h5["remodeling"].attrs["resorbed_mm3"])
    box_loss = measured[0.0][1] - measured[10.0][1]
    assert box_loss == pytest.approx(measured[10.0][2], rel=1e-6)  # the box holds the whole bone
    assert measured[0.0][0] - measured[10.0][0] == pytest.approx(box_loss, rel=0.03)


def test_porosity_from_rasterised_labels_matches_the_analytic_porosity(tmp_path):
    config = tiny_leg_config(load_config(), geometry={"source_detector_mm": 250.0},
                             detector={"pixels_x": 288, "pixels_y": 128},
                             sim={"phantom": {"ground_truth_supersampling": 1}})
    imager = Imager(config)
    path = tmp_path / "ground_truth.h5"
    imager.write_ground_truth(path, 2.0, 1)
    with h5py.File(path) as h5:
        labels = h5["labels"][:]
        voxel = h5["labels"].attrs["voxel_size_um"] * UM
        volumes = dict(h5["volumes"].attrs)
        count = h5["lacunae"].attrs["count"]
    assert voxel == pytest.approx(1.1 * UM)
    counts = np.bincount(labels.ravel(), minlength=5) * voxel**3
    tissue = counts[Label.BONE] + counts[Label.LCN_PORE]
    assert count >= 50
    assert tissue == pytest.approx(volumes["bone_tissue_mm3"], rel=0.01)
    assert counts[Label.LCN_PORE] == pytest.approx(volumes["lcn_mm3"], rel=0.05)
    assert counts[Label.LCN_PORE] / tissue == pytest.approx(volumes["porosity"], rel=0.05)
    assert counts[Label.VESSEL] == pytest.approx(volumes["vessel_mm3"], rel=0.05)


def test_days_outside_the_study_are_refused(default_phantom):
    with pytest.raises(ValueError, match="max_study_day"):
        specimen_anatomy(default_phantom, default_phantom.max_day + 1)
    with pytest.raises(ValueError, match="outside"):
        specimen_anatomy(default_phantom, -1.0)
