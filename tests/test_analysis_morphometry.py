"""Morphometry against analytic shapes, porespy's local thickness and the simulator's ground truth."""

from __future__ import annotations

import json

import h5py
import numpy as np
import porespy
import pytest

from nanoscope_daq.analysis.euler import connectivity_density, delta_euler, euler_number
from nanoscope_daq.analysis.labels import Code
from nanoscope_daq.analysis.morphometry import MorphometrySettings, find_lacunae, morphometry
from nanoscope_daq.analysis.thickness import local_thickness
from nanoscope_daq.config import load_config
from nanoscope_daq.physics.presets import tiny_leg_config
from nanoscope_daq.sim.imaging.imager import Imager

Z, Y, X = np.mgrid[:40, :64, :64]
SHAPES = {
    # name: (mask, analytic thickness in voxels)
    "plate 7 voxels": (np.abs(Y - 32) <= 3, 7.0),
    "rod of radius 6": ((Y - 32) ** 2 + (X - 32) ** 2 <= 36, 12.0),
    "rod of radius 9": ((Y - 32) ** 2 + (X - 32) ** 2 <= 81, 18.0),
    "ball of radius 8": ((Z - 20) ** 2 + (Y - 32) ** 2 + (X - 32) ** 2 <= 64, 16.0),
    "tube wall 10": ((np.hypot(Y - 32, X - 32) <= 30) & (np.hypot(Y - 32, X - 32) > 20), 10.0),
}


@pytest.mark.parametrize("name", SHAPES)
def test_local_thickness_is_within_one_voxel_of_analytic_shapes(name):
    mask, expected = SHAPES[name]
    thickness = local_thickness(mask)
    assert np.all(thickness[~mask] == 0)
    assert thickness[mask].mean() == pytest.approx(expected, abs=1.0)
    assert np.median(thickness[mask]) == pytest.approx(expected, abs=1.0)


@pytest.mark.parametrize("name", ["rod of radius 6", "ball of radius 8", "tube wall 10"])
def test_local_thickness_agrees_with_porespy(name):
    mask, _ = SHAPES[name]
    ours = local_thickness(mask)
    theirs = porespy.filters.local_thickness(mask)  # radius R; ours reports 2 R - 0.5
    assert ours[mask].mean() == pytest.approx(2 * theirs[mask].mean() - 0.5, abs=0.25)
    assert np.mean(np.abs(ours[mask] - (2 * theirs[mask] - 0.5)) <= 1.0) > 0.95


def test_euler_number_and_edge_corrected_connectivity():
    ball = SHAPES["ball of radius 8"][0]
    assert euler_number(ball) == 1 and delta_euler(ball) == pytest.approx(1.0)
    shell = ball & ((Z - 20) ** 2 + (Y - 32) ** 2 + (X - 32) ** 2 > 16)
    assert euler_number(shell) == 2  # one piece enclosing one cavity
    torus = np.hypot(np.hypot(Y - 32, X - 32) - 12, Z - 20) <= 3
    assert euler_number(torus) == 0
    assert connectivity_density(torus, 2.0) == pytest.approx(0.5)  # one handle in 2 mm^3
    # An unbounded lattice of rods (period 8): V - E = 1 - 3 per cell; a window of whole periods sees -2 per cell.
    g = np.indices((33, 33, 33)) % 8 < 3
    lattice = (g[0] & g[1]) | (g[1] & g[2]) | (g[0] & g[2])
    assert delta_euler(lattice) == pytest.approx(-2 * 4**3)
    with pytest.raises(ValueError, match="positive total volume"):
        connectivity_density(torus, 0.0)


def _trabecular_bone() -> np.ndarray:
    """A cortical tube (wall 10 voxels) around plates 3 voxels thick, 7 apart, clear of the wall."""
    z, y, x = np.mgrid[:40, :96, :96]
    r = np.hypot(y - 48, x - 48)
    labels = np.zeros(z.shape, np.uint8)
    labels[(r <= 44) & (r > 34)] = Code.BONE
    labels[(r <= 31) & (x % 10 < 3)] = Code.BONE
    return labels


def test_bone_morphometry_of_a_tube_around_plates():
    m = morphometry(_trabecular_bone(), 2.0)
    assert m.ct_th_um == pytest.approx(10 * 2.0, abs=2.0)
    assert m.tb_th_um == pytest.approx(3 * 2.0, abs=2.0)
    assert m.tb_sp_um == pytest.approx(7 * 2.0, abs=2.0)
    assert m.tb_n_per_mm == pytest.approx(1e3 / 20.0, rel=0.1)
    tv_mm3 = np.pi * 44.5**2 * 40 * 0.002**3
    assert m.tv_mm3 == pytest.approx(tv_mm3, rel=0.03)
    assert m.bv_tv == pytest.approx(m.bv_mm3 / m.tv_mm3)
    assert m.porosity == 0 and m.lacunae.count == 0
    report = json.loads(m.to_json())
    assert report["tb_th_um"] == pytest.approx(m.tb_th_um) and "Tb.Sp" in m.table()


def _ellipsoid_mask(shape, centres, semi, rng) -> np.ndarray:
    mask = np.zeros(shape, bool)
    grid = np.indices(shape).reshape(3, -1).T
    for c, s in zip(centres, semi, strict=True):
        rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        w = (grid - c) @ rot
        mask.ravel()[np.sum((w / s) ** 2, axis=1) <= 1] = True
    return mask


def test_porosity_lacuna_count_volume_and_thickness_of_known_ellipsoids():
    rng = np.random.default_rng(4)
    shape, spacing = (48, 64, 64), 16
    centres = np.array([(z, y, x) for z in range(8, 48, spacing) for y in range(8, 64, spacing)
                        for x in range(8, 64, spacing)], float) + rng.uniform(-1.5, 1.5, (48, 3))
    semi = np.column_stack([rng.uniform(5, 6.5, 48), rng.uniform(3.5, 4.5, 48), rng.uniform(3, 3.4, 48)])
    lcn = _ellipsoid_mask(shape, centres, semi, rng)
    voxel = 0.5
    tissue_mm3 = lcn.size * (voxel * 1e-3) ** 3  # the block is bone tissue
    lacunae = find_lacunae(lcn, voxel, tissue_mm3, MorphometrySettings(lacuna_min_volume_um3=20.0))
    analytic = 4 / 3 * np.pi * semi.prod(axis=1)
    assert lcn.mean() == pytest.approx(analytic.sum() / np.prod(shape), rel=0.05)  # porosity
    assert lacunae.count == len(centres) and lacunae.pieces == len(centres)
    assert lacunae.density_per_mm3 == pytest.approx(len(centres) / tissue_mm3)
    assert lacunae.mean_volume_um3 == pytest.approx(analytic.mean() * voxel**3, rel=0.05)
    # Mean local thickness of an ellipsoid lies below its least diameter and above half of it.
    assert 2 * semi[:, 2].mean() * voxel * 0.5 < np.mean(lacunae.thickness_um) < 2 * semi[:, 2].mean() * voxel


def test_lacunae_cut_by_a_face_count_when_their_centre_lies_inside():
    lcn = np.zeros((30, 20, 20), bool)
    lcn[8:16, 8:12, 8:12] = True  # complete, 8 voxels long in z
    lcn[18:26, 8:12, 2:6] = True  # complete
    lcn[:3, 8:12, 8:12] = True  # 3 of 8 voxels inside: centre outside
    lcn[-6:, 8:12, 14:18] = True  # 6 of 8 inside: centre inside
    found = find_lacunae(lcn, 1.0, 1e-6, MorphometrySettings(lacuna_min_volume_um3=10, lacuna_min_thickness_um=1))
    assert (found.count, found.pieces, len(found.volumes_um3)) == (3, 4, 2)
    assert found.volumes_um3 == pytest.approx([128.0, 128.0])


@pytest.fixture(scope="module")
def tiny_leg_truth(tmp_path_factory) -> dict:
    config = tiny_leg_config(load_config(), geometry={"source_detector_mm": 250.0},
                             detector={"pixels_x": 288, "pixels_y": 112},
                             sim={"phantom": {"ground_truth_supersampling": 1}})
    path = tmp_path_factory.mktemp("gt") / "ground_truth.h5"
    Imager(config).write_ground_truth(path, 2.0, 1)
    with h5py.File(path) as h5:
        return {"labels": h5["labels"][:], "voxel_um": float(h5["labels"].attrs["voxel_size_um"]),
                "volumes": dict(h5["volumes"].attrs), "count": int(h5["lacunae"].attrs["count"]),
                "lacuna_volumes_um3": h5["lacunae/volumes_um3"][:]}


def test_porosity_and_lacunae_of_the_simulated_tibia_match_its_ground_truth(tiny_leg_truth):
    truth = tiny_leg_truth
    labels = truth["labels"]
    tissue_mm3 = np.count_nonzero((labels == Code.BONE) | (labels == Code.LCN)) * (truth["voxel_um"] * 1e-3) ** 3
    lacunae = find_lacunae(labels == Code.LCN, truth["voxel_um"], tissue_mm3, MorphometrySettings())
    assert truth["count"] >= 50
    assert lacunae.count == pytest.approx(truth["count"], rel=0.05)
    assert lacunae.mean_volume_um3 == pytest.approx(truth["lacuna_volumes_um3"].mean(), rel=0.1)
    lcn_mm3 = np.count_nonzero(labels == Code.LCN) * (truth["voxel_um"] * 1e-3) ** 3
    assert lcn_mm3 / tissue_mm3 == pytest.approx(truth["volumes"]["porosity"], rel=0.05)


def test_morphometry_refuses_volumes_without_bone():
    with pytest.raises(ValueError, match="no bone"):
        morphometry(np.zeros((4, 4, 4), np.uint8), 1.0)
    with pytest.raises(ValueError, match="3-D"):
        morphometry(np.zeros((4, 4), np.uint8), 1.0)
