"""Darks, flats interpolated in time, zingers, -log, rings, Paganin; bad input refused with the fix named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nanoscope_daq.recon import (
    ParallelGeometry,
    ReconInputError,
    build_flat_field,
    check_angles,
    normalise,
    paganin_filter,
    reconstruct,
    remove_rings,
    remove_zingers,
    to_line_integrals,
)
from nanoscope_daq.recon.phantoms import parallel_sinogram, shepp_logan
from nanoscope_daq.recon.preprocess import median3x3, median3x3_finite

ROWS, COLS = 6, 40


pytestmark = pytest.mark.torch_threads(1)


def test_flats_are_interpolated_in_time_between_groups():
    dark = np.full((3, ROWS, COLS), 100.0)
    before = np.full((4, ROWS, COLS), 1100.0)  # the beam drifts from 1000 to 1400 counts above dark
    after = np.full((4, ROWS, COLS), 1500.0)
    field = build_flat_field(dark, np.concatenate([before, after]), [np.arange(4), np.arange(4, 8)],
                             flat_times=np.r_[np.arange(4), 105 + np.arange(4)])
    times = np.array([-5.0, 1.5, 54.0, 106.5, 200.0])  # before, at, between, at and after the groups
    open_beam = 1000 + 400 * np.clip((times - 1.5) / 105.0, 0, 1)
    projections = 100 + 0.5 * open_beam[:, None, None] * np.ones((5, ROWS, COLS))
    transmission = normalise(projections, field, times)
    assert torch.allclose(transmission, torch.full_like(transmission, 0.5), atol=1e-6)


def test_zingers_are_removed_and_edges_kept():
    rng = np.random.default_rng(0)
    frames = 100 + 1000 * np.ones((2, 20, 20)) + rng.normal(0, 10, (2, 20, 20))
    frames[:, :, 10:] -= 600  # an edge: a specimen half the frame
    clean = frames.copy()
    frames[0, 5, 5] += 3000  # direct hits on the sensor
    frames[1, 12, 14] += 900
    out = remove_zingers(torch.tensor(frames, dtype=torch.float32), torch.tensor(100.0), 0.5).numpy()
    assert abs(out[0, 5, 5] - clean[0, 5, 5]) < 40 and abs(out[1, 12, 14] - clean[1, 12, 14]) < 40
    untouched = np.ones_like(out, bool)
    untouched[0, 5, 5] = untouched[1, 12, 14] = False
    assert np.allclose(out[untouched], clean[untouched], atol=1e-3)  # noise and the edge stay


def test_the_compiled_median_of_zinger_removal_equals_torchs_median_at_edges_and_ties():
    """The sorting network (median3x3_finite) gives nanmedian's values exactly, replicated edges and ties included."""
    rng = np.random.default_rng(5)
    for frames in (rng.normal(0, 100, (3, 9, 13)), rng.integers(0, 4, (2, 7, 5)), rng.normal(0, 1, (1, 1, 6))):
        tensor = torch.tensor(frames, dtype=torch.float32)
        assert torch.equal(median3x3_finite(tensor), median3x3(tensor))


def test_log_is_clipped_and_dead_flat_pixels_repaired():
    dark = np.zeros((1, ROWS, COLS))
    flat = np.full((2, ROWS, COLS), 1000.0)
    flat[:, 2, 7] = 0.0  # one dead pixel
    field = build_flat_field(dark, flat)
    projections = np.full((1, ROWS, COLS), 500.0)
    projections[0, 4, 4] = -3.0  # below the dark level after offset drift: photon-starved
    lines = to_line_integrals(normalise(projections, field), 1e-3)
    assert torch.isfinite(lines).all()
    assert lines[0, 4, 4] == pytest.approx(-math.log(1e-3))
    assert lines[0, 2, 7] == pytest.approx(math.log(2), rel=1e-5)


def test_ring_removal_takes_out_a_miscalibrated_pixel():
    ellipses = shepp_logan(0.3)
    geometry = ParallelGeometry(np.linspace(0, 180, 120, endpoint=False), 1, 80, 0.01)
    sinogram = torch.tensor(parallel_sinogram(ellipses, geometry)[:, None], dtype=torch.float32)
    striped = sinogram.clone()
    striped[:, :, 31] += 0.05  # a pixel whose gain the flat did not capture: a stripe, a ring
    clean = reconstruct(sinogram, geometry).numpy()[0]
    ringed = reconstruct(striped, geometry).numpy()[0]
    repaired = reconstruct(remove_rings(striped, 9), geometry).numpy()[0]
    before, after = np.abs(ringed - clean).max(), np.abs(repaired - clean).max()
    assert before > 0.3 and after < before / 4
    with pytest.raises(ReconInputError, match="odd number of pixels >= 3"):
        remove_rings(striped, 4)


def test_paganin_retrieves_a_thin_homogeneous_object():
    """A propagation-blurred step of a homogeneous sheet: the filter removes the fringe and keeps the mean."""
    pixel, distance, energy, delta_beta = 0.001, 50.0, 10.0, 200.0
    x = (np.arange(256) - 128) * pixel
    mu_t = np.where(np.abs(x) < 0.04, 0.2, 0.0)
    fringe = 0.1 * np.sign(x) * (np.abs(np.abs(x) - 0.04) < 2 * pixel)  # edge-enhancement over/undershoot
    transmission = torch.tensor(np.tile(np.exp(-mu_t) * (1 + fringe), (1, 16, 1)), dtype=torch.float32)
    retrieved = -torch.log(paganin_filter(transmission, pixel, distance, energy, delta_beta))[0, 8].numpy()
    assert retrieved.mean() == pytest.approx(mu_t.mean(), rel=0.02)
    assert retrieved.std() < mu_t.std()  # smoothed
    with pytest.raises(ReconInputError, match="--paganin, --energy-kev, --distance-mm"):
        paganin_filter(transmission, pixel, 0.0, energy, delta_beta)


def test_no_flats_is_refused_naming_the_fix():
    with pytest.raises(ReconInputError, match="no flat fields .* acquire flats with the scan"):
        build_flat_field(np.zeros((2, ROWS, COLS)), np.zeros((0, ROWS, COLS)))


def test_flats_without_signal_are_refused_naming_the_fix():
    darks = np.full((2, ROWS, COLS), 100.0)
    with pytest.raises(ReconInputError, match="flat fields hold no signal above the dark level in 100% .* beam on"):
        build_flat_field(darks, np.full((3, ROWS, COLS), 99.0))
    with pytest.warns(UserWarning, match="no dark frames"), pytest.raises(ReconInputError, match="no signal"):
        build_flat_field(None, np.zeros((3, ROWS, COLS)))


def test_shape_mismatch_is_refused_naming_the_fix():
    field = build_flat_field(np.zeros((1, ROWS, COLS)), np.ones((2, ROWS, COLS)))
    with pytest.raises(ReconInputError, match=r"projections are \(3, 20\) pixels but darks/flats \(6, 40\).*binning"):
        normalise(np.ones((4, 3, 20)), field)
    with pytest.raises(ReconInputError, match=r"dark frames are \(3, 20\) pixels but flats \(6, 40\)"):
        build_flat_field(np.zeros((1, 3, 20)), np.ones((2, ROWS, COLS)))
    geometry = ParallelGeometry(np.arange(20.0) * 9, ROWS, COLS, 0.01)
    with pytest.raises(ReconInputError, match=r"projections have shape \(19, 6, 40\) but the geometry describes "
                                              r"\(20, 6, 40\)"):
        reconstruct(np.zeros((19, ROWS, COLS)), geometry)


def test_nans_are_refused_naming_the_frames_and_the_fix():
    field = build_flat_field(np.zeros((1, ROWS, COLS)), np.ones((2, ROWS, COLS)))
    projections = np.ones((5, ROWS, COLS))
    projections[3, 1, 1] = np.nan
    with pytest.raises(ReconInputError, match=r"projections contain 1 NaN or infinite values \(frames \[3\]\).*"
                                              r"image_key 3"):
        normalise(projections, field)


def test_too_few_angles_and_gaps_are_refused_naming_the_fix():
    few = ParallelGeometry([0.0, 45.0, 90.0, 135.0], ROWS, COLS, 0.01)
    with pytest.raises(ReconInputError, match="only 4 projection.* at least 16 .*acquire more angles"):
        check_angles(few, 16, 5.0)
    wedge = ParallelGeometry(np.linspace(0, 120, 100), ROWS, COLS, 0.01)
    with pytest.raises(ReconInputError, match="gap of 60.0 deg in the 180 deg a parallel-beam tomogram needs"):
        check_angles(wedge, 16, 5.0)
    check_angles(ParallelGeometry(np.linspace(0, 360, 200, endpoint=False), ROWS, COLS, 0.01), 16, 5.0)
