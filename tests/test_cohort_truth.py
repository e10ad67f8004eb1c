"""The cohort's applied remodelling in the imaged box, against the ground-truth labels of a small specimen."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nanoscope_daq.cohort import main as cohort_main
from nanoscope_daq.config import load_config
from nanoscope_daq.physics.materials import Label
from nanoscope_daq.physics.presets import tiny_leg_config
from nanoscope_daq.sim.imaging.groundtruth import imaged_box, resorbed_in_box
from nanoscope_daq.sim.imaging.imager import Imager

DAYS = (2.0, 8.0)


@pytest.fixture(scope="module")
def specimen(tmp_path_factory):
    """A tiny leg that forms and resorbs (many pits), imaged by 80 rows of 1.1 um: pits inside, cut by and
    outside the box; its ground truth on two days."""
    config = tiny_leg_config(load_config(), sim={"phantom": {"pits_per_day": 5.0, "ground_truth_supersampling": 1,
                                                             "pit_depth_min_um": 8.0, "pit_depth_max_um": 14.0,
                                                             "pit_width_min_um": 20.0, "pit_width_max_um": 30.0}},
                             detector={"pixels_x": 200, "pixels_y": 80}, geometry={"source_detector_mm": 250.0})
    imager = Imager(config)
    folder = tmp_path_factory.mktemp("truth")
    days = []
    for day in DAYS:
        path = folder / f"day{day:g}.h5"
        imager.write_ground_truth(path, day, 1)
        with h5py.File(path) as h5:
            days.append({"tissue": np.isin(h5["labels"][:], (Label.BONE, Label.LCN_PORE)),
                         "voxel_mm3": (h5.attrs["voxel_size_um"] * 1e-3) ** 3,
                         "tissue_mm3": float(h5["volumes"].attrs["bone_tissue_mm3"]),
                         "resorbed_whole_mm3": float(h5["remodeling"].attrs["resorbed_mm3"])})
    states = [imager.state(imager.snap_day(day, 1)) for day in DAYS]
    return imager, states, days


def test_resorption_in_the_box_is_the_bone_the_two_days_labels_lose(specimen):
    imager, (before, after), (first, second) = specimen
    box = imaged_box(imager, 1)
    new = after.pits.days > before.day
    z = after.pits.ellipsoids.centres[:, 2]
    assert np.count_nonzero(new & (z > box.lo[2]) & (z < box.hi[2])) >= 2  # pits dug in the box
    assert np.count_nonzero(new & ((z < box.lo[2]) | (z > box.hi[2]))) >= 2  # and outside it
    resorbed = resorbed_in_box(before, after, box)
    lost = np.count_nonzero(first["tissue"] & ~second["tissue"]) * first["voxel_mm3"]
    assert resorbed == pytest.approx(lost, rel=0.05)  # measured: 0.4 % apart (the pits against the later day's
    # cortex, as the whole bone's record counts them, give 3.2 times the bone lost)
    # What the box's bone gained besides is the formed bone the labels show.
    formed = second["tissue_mm3"] - first["tissue_mm3"] + resorbed
    gained = np.count_nonzero(second["tissue"] & ~first["tissue"]) * first["voxel_mm3"]
    assert formed == pytest.approx(gained, rel=0.05)
    # The whole bone's record counts pits outside the box and bone never laid inside a pit: far more.
    assert second["resorbed_whole_mm3"] - first["resorbed_whole_mm3"] > 2 * resorbed


def test_resorption_needs_the_days_in_order(specimen):
    imager, (before, after), _ = specimen
    with pytest.raises(ValueError, match="must not precede"):
        resorbed_in_box(after, before, imaged_box(imager, 1))
    assert resorbed_in_box(before, before, imaged_box(imager, 1)) == 0.0


def test_truth_only_refuses_a_folder_without_a_cohort(tmp_path):
    with pytest.raises(FileNotFoundError, match="generate one first"):
        cohort_main(["--out", str(tmp_path), "--truth-only"])
