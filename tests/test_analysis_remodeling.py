"""4D remodelling against what the simulator applied: formation, resorption, and a repositioned follow-up."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
from scipy import ndimage

from nanoscope_daq.analysis import remodeling as remodeling_module
from nanoscope_daq.analysis.labels import Code
from nanoscope_daq.analysis.longitudinal import Session, bone_labels, remodeling_between
from nanoscope_daq.analysis.registration import RigidTransform
from nanoscope_daq.analysis.remodeling import remodeling
from nanoscope_daq.analysis.study.sources import TomogramRecord
from nanoscope_daq.analysis.study.tasks import Layout, StudySettings, analyse_interval, bone_and_pores, grey_porosity
from nanoscope_daq.config import load_config
from nanoscope_daq.physics.materials import MaterialId
from nanoscope_daq.physics.presets import tiny_leg_config
from nanoscope_daq.sim.imaging.imager import Imager
from nanoscope_daq.volume_files import Volume, read_labels, read_volume, write_labels, write_volume

GRID = {"geometry": {"source_detector_mm": 250.0}}  # 1.1 um voxels


def _truth(config, days, tmp_path) -> list[dict]:
    imager = Imager(config)
    out = []
    for day in days:
        path = tmp_path / f"day{day:g}.h5"
        imager.write_ground_truth(path, day, 1)
        with h5py.File(path) as h5:
            pits = h5["remodeling/pits"]
            out.append({"labels": h5["labels"][:], "voxel_um": float(h5["labels"].attrs["voxel_size_um"]),
                        "volumes": dict(h5["volumes"].attrs), "remodeling": dict(h5["remodeling"].attrs),
                        "pit_depth_um": pits["semi_axes_um"][:, 0], "pit_day": pits["day"][:],
                        "pit_z_mm": pits["centres_mm"][:, 2], "z0_mm": float(h5.attrs["grid_origin_mm"][2])})
    return out


@pytest.fixture(scope="module")
def formation(tmp_path_factory):
    config = tiny_leg_config(load_config(), sim={"phantom": {"pits_per_day": 0.0, "transcortical_canal_count": 0,
                                                             "ground_truth_supersampling": 1}},
                             detector={"pixels_x": 200, "pixels_y": 48}, **GRID)
    return config, _truth(config, (0.0, 8.0), tmp_path_factory.mktemp("formation"))


def _expected_bfr(config, before, after, days) -> float:
    height_mm = before["labels"].shape[0] * before["voxel_um"] * 1e-3
    formed = after["remodeling"]["formed_mm3"] * height_mm / config.sim.phantom.bone_length_mm
    return formed / before["volumes"]["bone_tissue_mm3"] / days


def test_formation_rates_match_the_applied_apposition(formation):
    config, (before, after) = formation
    result = remodeling(before["labels"], after["labels"], before["voxel_um"], 8.0, register=False)
    assert result.bfr_per_day == pytest.approx(_expected_bfr(config, before, after, 8.0), rel=0.1)
    assert result.mar_periosteal_um_per_day == pytest.approx(config.sim.phantom.periosteal_mar_um_per_day, rel=0.1)
    assert result.mar_endosteal_um_per_day == pytest.approx(config.sim.phantom.endosteal_mar_um_per_day, rel=0.1)
    assert result.ms_bs > 0.95  # every surface forms
    assert result.resorbed_mm3 == 0 and result.es_bs == 0
    assert result.ms_bs_per_day == pytest.approx(result.ms_bs / 8.0)


def test_a_repositioned_follow_up_is_registered_back_before_the_rates(formation):
    config, (before, after) = formation
    centre = tuple((np.asarray(after["labels"].shape) - 1) / 2)
    moved = RigidTransform((0.0, 0.0, 3.0), (1.5, -3.0, 2.0), centre).resample(after["labels"], order=0)
    result = remodeling(before["labels"], moved, before["voxel_um"], 8.0)
    # The registration undoes the in-plane turn of 3 degrees and the shift (turned back by it).
    assert result.transform.angles_deg[2] == pytest.approx(-3.0, abs=0.3)
    turn = np.radians(3.0)
    expected_yx = -np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]]) @ [-3.0, 2.0]
    np.testing.assert_allclose(result.transform.shift_voxels[1:], expected_yx, atol=0.6)
    assert result.bfr_per_day == pytest.approx(_expected_bfr(config, before, after, 8.0), rel=0.1)
    assert result.mar_periosteal_um_per_day == pytest.approx(config.sim.phantom.periosteal_mar_um_per_day, rel=0.1)
    assert result.mar_endosteal_um_per_day == pytest.approx(config.sim.phantom.endosteal_mar_um_per_day, rel=0.1)


def test_resorption_rates_match_the_pits_dug(tmp_path):
    config = tiny_leg_config(load_config(),
                             sim={"phantom": {"periosteal_mar_um_per_day": 0.0, "endosteal_mar_um_per_day": 0.0,
                                              "pits_per_day": 3.0, "transcortical_canal_count": 0,
                                              "ground_truth_supersampling": 1}},
                             detector={"pixels_x": 200, "pixels_y": 96}, **GRID)
    before, after = _truth(config, (2.0, 10.0), tmp_path)
    result = remodeling(before["labels"], after["labels"], before["voxel_um"], 8.0, register=False)
    resorbed = before["volumes"]["bone_tissue_mm3"] - after["volumes"]["bone_tissue_mm3"]
    assert resorbed > 0
    assert result.brr_per_day == pytest.approx(resorbed / before["volumes"]["bone_tissue_mm3"] / 8.0, rel=0.1)
    top = before["z0_mm"] + before["labels"].shape[0] * before["voxel_um"] * 1e-3
    new = (after["pit_day"] > 2.0) & (after["pit_z_mm"] > before["z0_mm"]) & (after["pit_z_mm"] < top)
    assert new.sum() >= 4
    assert result.mrr_um_per_day == pytest.approx(after["pit_depth_um"][new].mean() / 8.0, rel=0.1)
    assert result.formed_mm3 == 0 and 0 < result.es_bs < 0.2


def test_bad_intervals_are_refused(formation):
    _, (before, after) = formation
    with pytest.raises(ValueError, match="> 0 days"):
        remodeling(before["labels"], after["labels"], 1.1, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        remodeling(before["labels"], after["labels"][1:], 1.1, 1.0)


def test_bone_of_a_noisy_absorption_volume_is_found_by_filter_and_threshold():
    z, y, x = np.mgrid[:24, :64, :64]
    r = np.hypot(y - 31.5, x - 31.5)
    truth = (r > 10) & (r < 20)  # a cortical ring in soft tissue (r < 28) and air
    volume = np.where(truth, 7.0, np.where(r < 28, 1.0, 0.0)) + np.random.default_rng(0).normal(0, 6.0, r.shape)
    found = bone_labels(volume) == Code.BONE
    assert 2 * np.sum(found & truth) / (found.sum() + truth.sum()) > 0.9
    assert 2 * np.sum((volume > 4.0) & truth) / (np.sum(volume > 4.0) + truth.sum()) < 0.7  # unfiltered: noise


def test_sessions_out_of_order_are_refused():
    volume = Volume(np.zeros((4, 8, 8), np.float32), 2.2)
    with pytest.raises(ValueError, match=r"follow-up \(day 0\) must come after the baseline \(day 10\)"):
        remodeling_between(Session(10.0, volume, volume), Session(0.0, volume, volume))


def test_formed_bone_from_noisy_grey_values_gives_the_apposition_within_a_tenth():
    """A cortical ring grown by 3 voxels outside and 2 inside, in noise at the demo's level: sub-voxel MAR."""
    z, y, x = np.mgrid[:32, :96, :96]
    r = np.hypot(y - 47.5, x - 47.5)
    rng = np.random.default_rng(1)
    sessions = []
    for day, (inner, outer) in ((0.0, (14.0, 30.0)), (10.0, (12.0, 33.0))):
        bone = (r > inner) & (r < outer)
        volume = np.where(bone, 7.0, np.where(r < inner, 0.5, 1.0)) + rng.normal(0, 3.0, r.shape)
        volume = ndimage.gaussian_filter(volume, 1.0).astype(np.float32)  # the reconstruction's blur
        sessions.append(Session(day, Volume(volume, 2.0), Volume(bone_labels(volume), 2.0)))
    result = remodeling_between(*sessions, register=False)
    assert result.mar_periosteal_um_per_day == pytest.approx(3 * 2.0 / 10, rel=0.1)
    assert result.mar_endosteal_um_per_day == pytest.approx(2 * 2.0 / 10, rel=0.1)


def test_a_study_interval_measures_apposition_under_a_voxel_from_the_grey_values(tmp_path):
    """0.4 um/day for 5 days at 2.2 um voxels (the cohort's ovariectomised endosteum): under one voxel per
    interval, which the labels of a noisy scan alone read at their floor; the interval task takes the grey values.
    The scans: the ground truth's attenuation blurred by a voxel, with noise of 0.15 of the bone / soft-tissue
    contrast per voxel (the cohort's tomograms: 0.14)."""
    config = tiny_leg_config(load_config(), sim={"phantom": {"periosteal_mar_um_per_day": 0.4,
                                                             "endosteal_mar_um_per_day": 0.4, "pits_per_day": 0.0,
                                                             "transcortical_canal_count": 0}},
                             detector={"pixels_x": 160, "pixels_y": 24})
    imager = Imager(config)
    rng = np.random.default_rng(3)
    results = []
    for day in (0.0, 5.0):
        truth = tmp_path / f"truth{day:g}.h5"
        imager.write_ground_truth(truth, day, 1)
        with h5py.File(truth) as h5:
            mu = h5["materials/mu_per_mm"][:]
            scan = ndimage.gaussian_filter(h5["attenuation"][:], 1.0)
            contrast = mu[MaterialId.BONE] - mu[MaterialId.SOFT_TISSUE]
            scan += rng.normal(0.0, 0.15 * contrast, scan.shape).astype(np.float32)
            volume = Volume(scan, float(h5["labels"].attrs["voxel_size_um"]), {})
        paths = {"volume": str(tmp_path / f"day{day:g}_volume.h5"), "labels": str(tmp_path / f"day{day:g}_labels.h5")}
        write_volume(paths["volume"], volume)
        write_labels(paths["labels"], Volume(bone_and_pores(volume.data, 1.0), volume.voxel_size_um, {}))
        record = TomogramRecord(tmp_path / f"day{day:g}.nxs", "M1", "ovx", "ovariectomy", day, "fly_tomo", f"r{day:g}",
                                "none")
        results.append({"record": {**dataclasses.asdict(record), "path": str(record.path)}, "outputs": paths,
                        "fingerprint": {"input": str(day)}})
    settings = StudySettings.from_config(load_config())
    interval = analyse_interval(*results, Layout(tmp_path / "out"), settings)
    measures = interval["measures"]
    assert measures["mar_periosteal_um_per_day"] == pytest.approx(0.4, rel=0.1)  # measured 0.396
    assert measures["mar_endosteal_um_per_day"] == pytest.approx(0.4, rel=0.1)  # measured 0.427
    labels = [read_labels(r["outputs"]["labels"]).data for r in results]
    scans = tuple(read_volume(r["outputs"]["volume"]).data for r in results)
    with_grey = remodeling(*labels, volume.voxel_size_um, 5.0, volumes=scans)
    labels_only = remodeling(*labels, volume.voxel_size_um, 5.0)
    assert with_grey.formed_volumes_from.startswith("the grey values") and \
        interval["formed_volumes_from"] == with_grey.formed_volumes_from
    assert measures["mar_endosteal_um_per_day"] == pytest.approx(with_grey.mar_endosteal_um_per_day)
    assert measures["mar_endosteal_um_per_day"] != pytest.approx(labels_only.mar_endosteal_um_per_day, rel=0.01)


def test_a_bone_that_fills_the_volume_measures_formation_from_its_labels_and_says_so():
    """No soft tissue around the cortex: no background grey level to read, so the labels' voxels, said so."""
    z, y, x = np.mgrid[:16, :48, :48]
    r = np.hypot(y - 23.5, x - 23.5)
    volumes = tuple(np.where(r > inner, 7.0, 0.5).astype(np.float32) for inner in (14.0, 12.0))
    labels = [bone_labels(volume) for volume in volumes]
    with_volumes = remodeling(*labels, 2.0, 10.0, register=False, volumes=volumes)
    labels_only = remodeling(*labels, 2.0, 10.0, register=False)
    assert with_volumes.formed_volumes_from.startswith("the labels' voxels: no grey levels to read (the bone is")
    assert labels_only.formed_volumes_from == "the labels' voxels: no reconstructions given"
    for name in ("formed_mm3", "bfr_per_day", "mar_um_per_day", "mar_endosteal_um_per_day"):
        assert getattr(with_volumes, name) == getattr(labels_only, name), name
    assert with_volumes.formed_mm3 > 0


def test_a_cavity_of_the_labels_grows_to_the_grey_values_half_level_and_no_further():
    """The labels' cavity (drawn at 0.43 of the way to bone, as Otsu's threshold sat on the simulated cohort) is
    grown through its rim to where the bone fraction falls below 0.5; a separate loss elsewhere is not a cavity."""
    z, y, x = np.mgrid[:24, :48, :48]
    depth = np.hypot(np.hypot(z - 12, y - 24), x - 48.0)  # from a pit's centre on the bone's surface (x = 48)
    fraction_before = np.ones(depth.shape, np.float32)
    fraction_after = (fraction_before * np.clip((depth - 6.0) / 8.0, 0, 1)).astype(np.float32)  # a blurred pit
    fraction_after[4:7, 20:23, 10:13] = 0.2  # a loss of bone away from the pit (noise)
    before = fraction_before >= 0.43
    resorbed = before & (fraction_after < 0.43) & (depth < 20)  # the labels' cavity
    grown = remodeling_module._cavities_to_half_level(resorbed, before, fraction_before, fraction_after)
    half_level = before & (fraction_before >= 0.5) & (fraction_after < 0.5) & (depth < 20)
    assert resorbed.sum() < 0.9 * half_level.sum()
    assert np.array_equal(grown, resorbed | half_level)
    assert not grown[4:7, 20:23, 10:13].any()


def test_the_porosity_of_a_cortex_with_pores_under_the_resolution_is_read_from_its_grey_values():
    """A cortical ring holding ~4.5 % of pores 4 voxels wide, blurred and noisy: the segmentation resolves none of
    them; the grey values read the porosity (the bone's level from the upper half of the porous shell's values:
    its median would read the matrix low, and the porosity with it)."""
    z, y, x = np.mgrid[:32, :96, :96]
    r = np.hypot(y - 47.5, x - 47.5)
    ring = (r > 14) & (r < 34)
    rng = np.random.default_rng(3)
    pores = np.zeros(r.shape, bool)
    inside = np.argwhere(ring)
    for c in inside[rng.choice(len(inside), 140, replace=False)]:
        pores |= (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 4.0
    pores &= ring
    volume = np.where(ring & ~pores, 7.0, np.where(r < 14, 0.5, 1.0)) + rng.normal(0, 1.0, r.shape)
    volume = ndimage.gaussian_filter(volume, 1.0).astype(np.float32)  # the reconstruction's blur
    labels = bone_and_pores(volume, 1.0)
    true_porosity = (ring & pores).sum() / ring.sum()
    assert 0.03 < true_porosity < 0.06
    assert grey_porosity(volume, labels) == pytest.approx(true_porosity, rel=0.1)  # measured 0.0435 of 0.0449
    assert np.count_nonzero(labels == Code.LCN) / np.count_nonzero(labels >= Code.BONE) < 0.1 * true_porosity
