"""A simulated scan of the tiny leg, written as NXtomo, reconstructed offline and compared with the ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion

from nanoscope_daq.config import load_config
from nanoscope_daq.physics.materials import Label
from nanoscope_daq.physics.presets import tiny_leg_config
from nanoscope_daq.recon import ConeGeometry, ParallelGeometry, reconstruct
from nanoscope_daq.recon.algorithms import FilterSpec
from nanoscope_daq.recon.cli import add_recon_parser
from nanoscope_daq.recon.errors import ReconInputError
from nanoscope_daq.recon.joined_scans import all_frames_volume, fit_breathing, gate_open_volume, join_scans
from nanoscope_daq.recon.motion import unobservable_removed
from nanoscope_daq.recon.offline import find_axis, reconstruct_file
from nanoscope_daq.recon.phantoms import project_ellipsoids, rasterise_ellipsoids, shepp_logan_3d
from nanoscope_daq.sim.imaging.exposure import Exposure
from nanoscope_daq.sim.imaging.imager import Imager
from nanoscope_daq.volume_files import read_volume

ANGLES = 180
ROWS, COLS = 8, 144
MAGNIFICATION = 5.0  # TXM objective: 2.2 um pixels, a 317 um field around the 260 um leg


pytestmark = pytest.mark.torch_threads(1)


def _exposure(angle: float = 0.0, out: bool = False, beam: bool = True) -> Exposure:
    return Exposure(angle_deg=angle, sample_offset_mm=(3.0 if out else 0.0, 0.0, 0.0), respiration_mm=0.0,
                    force_n=0.0, day=0.0, exposure_s=0.1, kv=70.0, power_w=100.0, spot_um=10.0, xrays_on=beam,
                    binning=1)


def _write_nxtomo(path: Path, frames: np.ndarray, keys: np.ndarray, angles_deg: np.ndarray, geometry: dict,
                  pixel_m: float, sample_pixel_m: float) -> None:
    """The NXtomo layout of DESIGN.md and the instrument's writer (its geometry NXcollection)."""
    with h5py.File(path, "w") as h5:
        entry = h5.create_group("entry")
        entry["definition"] = "NXtomo"
        detector = entry.create_group("instrument/detector")
        detector["data"] = frames
        detector["image_key"] = keys
        detector["x_pixel_size"] = pixel_m
        detector["x_pixel_size"].attrs["units"] = "m"
        detector["start_time"] = np.arange(len(keys)) * 0.12
        detector["start_time"].attrs["units"] = "s"
        collection = entry.create_group("instrument/geometry")
        for key, value in geometry.items():
            collection[key] = value
            if key.endswith("distance"):
                collection[key].attrs["units"] = "mm"
        sample = entry.create_group("sample")
        sample["rotation_angle"] = angles_deg
        sample["rotation_angle"].attrs["units"] = "deg"
        sample["x_pixel_size"] = sample_pixel_m
        sample["x_pixel_size"].attrs["units"] = "m"


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """180 projections (0-180 deg, encoder jitter), 6 darks, 5 flats before and 5 after; ground truth."""
    folder = tmp_path_factory.mktemp("sim_scan")
    config = tiny_leg_config(load_config(), geometry={"kind": "parallel", "objective_magnification": MAGNIFICATION},
                             detector={"pixels_y": ROWS})
    imager = Imager(config)
    assert imager.frame_shape(1) == (ROWS, COLS)
    rng = np.random.default_rng(7)
    angles = np.linspace(0, 180, ANGLES, endpoint=False) + rng.normal(0, 0.02, ANGLES)
    exposures = ([_exposure(beam=False)] * 6 + [_exposure(out=True)] * 5 + [_exposure(a) for a in angles]
                 + [_exposure(out=True)] * 5)
    keys = np.array([2] * 6 + [1] * 5 + [0] * ANGLES + [1] * 5)
    frames = np.stack([imager.render(e, rng) for e in exposures])
    frame_angles = np.array([e.angle_deg for e in exposures])
    path = folder / "tiny_leg.nxs"
    voxel_m = imager.voxel_size_um(1) * 1e-6
    _write_nxtomo(path, frames, keys, frame_angles, {"type": "parallel", "magnification": MAGNIFICATION},
                  voxel_m * MAGNIFICATION, voxel_m)
    imager.write_ground_truth(folder / "ground_truth.h5", 0.0, 1)
    with h5py.File(folder / "ground_truth.h5") as h5:
        truth, labels = h5["attenuation"][:], h5["labels"][:]
    ideal = np.stack([-np.log(imager.transmission(_exposure(a))) for a in angles])
    return {"path": path, "folder": folder, "truth": truth, "labels": labels, "angles": angles, "ideal": ideal,
            "voxel_mm": imager.voxel_size_um(1) * 1e-3}


def _field_of_view() -> np.ndarray:
    """Voxels every projection sees: the cylinder inscribed in the detector's width."""
    c = np.arange(COLS) - (COLS - 1) / 2
    return np.broadcast_to(np.hypot(*np.meshgrid(c, c)) < COLS / 2 - 1, (ROWS, COLS, COLS))


def _interior(labels: np.ndarray, label: Label) -> np.ndarray:
    return binary_erosion(labels == label, iterations=3)


def test_noise_free_projections_reconstruct_to_the_ground_truth(scan):
    """The imaging physics alone (exact line integrals, pixel integration, detector blur): no noise."""
    geometry = ParallelGeometry(scan["angles"], ROWS, COLS, scan["voxel_mm"])
    volume = reconstruct(scan["ideal"], geometry, algorithm="fourier").numpy()
    truth, labels = scan["truth"], scan["labels"]
    bone, soft = _interior(labels, Label.BONE), _interior(labels, Label.SOFT_TISSUE)
    # Measured: bone interior mean 6.837 vs 6.830 /mm, soft tissue 0.7002 vs 0.7002 /mm; RMSE 0.21 /mm in the
    # field of view (edges: the detector blur of 1.4 px FWHM against a sharp ground truth).
    assert volume[bone].mean() == pytest.approx(truth[bone].mean(), rel=0.005)
    assert volume[soft].mean() == pytest.approx(truth[soft].mean(), rel=0.01)
    assert np.sqrt(np.mean((volume - truth)[_field_of_view()] ** 2)) < 0.3


def test_offline_reconstruction_of_the_nxtomo_file_matches_the_ground_truth(scan, tmp_path):
    out = reconstruct_file(scan["path"], tmp_path / "volume.h5", algorithm="fbp", filter="hann",
                           settings=load_config().recon)
    truth, labels = scan["truth"], scan["labels"]
    with h5py.File(out) as h5:
        volume = h5["volume"][:]
        assert volume.dtype == np.float32 and volume.shape == truth.shape
        assert h5["volume"].attrs["voxel_size_um"] == pytest.approx(scan["voxel_mm"] * 1e3)
        assert h5["volume"].attrs["units"] == "1/mm"
        prov = h5["provenance"].attrs
        assert prov["algorithm"] == "fbp" and prov["filter"] == "hann"
        assert prov["input_file"] == str(scan["path"].resolve())
        assert prov["cor_column"] == pytest.approx((COLS - 1) / 2, abs=0.25)  # the axis is at the detector centre
        assert prov["projections"] == ANGLES and prov["flats"] == 10 and prov["darks"] == 6
        assert np.allclose(h5["provenance/angles_deg"][:], scan["angles"])
        assert '"torch"' in prov["software"]
    bone, soft = _interior(labels, Label.BONE), _interior(labels, Label.SOFT_TISSUE)
    # Measured (0.1 s exposures, ~9000 counts per open-beam pixel): bone interior 6.826 vs 6.830 /mm, soft
    # tissue 0.698 vs 0.700 /mm, background 0.009 /mm; RMSE 0.50 /mm in the field of view, mostly photon noise.
    assert volume[bone].mean() == pytest.approx(truth[bone].mean(), rel=0.01)
    assert volume[soft].mean() == pytest.approx(truth[soft].mean(), rel=0.03)
    assert abs(volume[(labels == Label.BACKGROUND) & _field_of_view()].mean()) < 0.03
    assert np.sqrt(np.mean((volume - truth)[_field_of_view()] ** 2)) < 0.65


def test_slabs_of_slices_equal_the_whole_reconstruction_and_find_axis_its_axis(scan, tmp_path):
    """The study's chunks (analysis/study/chunks.py): parallel beam, each slab from its own detector rows."""
    settings = load_config().recon
    whole = read_volume(reconstruct_file(scan["path"], tmp_path / "whole.h5", settings=settings))
    cor = whole.provenance["cor_column"]
    assert find_axis(scan["path"], settings=settings)[0] == cor
    bounds = [0, 3, 5, ROWS]
    slabs = [read_volume(reconstruct_file(scan["path"], tmp_path / f"slab{a}.h5", cor=cor, settings=settings,
                                          slices=(a, b))) for a, b in zip(bounds, bounds[1:])]
    assert [s.provenance["slices"] for s in slabs] == [[0, 3], [3, 5], [5, ROWS]]
    np.testing.assert_allclose(np.concatenate([s.data for s in slabs]), whole.data, rtol=0,
                               atol=1e-5 * np.abs(whole.data).max())
    with pytest.raises(ReconInputError, match="centre of rotation given"):
        reconstruct_file(scan["path"], tmp_path / "no_axis.h5", settings=settings, slices=(0, 5))
    with pytest.raises(ReconInputError, match="not a range within"):
        reconstruct_file(scan["path"], tmp_path / "outside.h5", cor=cor, settings=settings, slices=(5, ROWS + 1))


def test_command_line_reconstructs_and_refuses_a_file_without_flats(scan, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="nanoscope")
    add_recon_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli.h5"
    args = parser.parse_args(["recon", str(scan["path"]), "-o", str(out), "--algorithm", "fourier", "--cor", "71.5"])
    assert args.func(args) == 0
    assert str(out) in capsys.readouterr().out
    provenance = read_volume(out).provenance  # the reader segmentation and morphometry use
    assert provenance["cor_method"] == "given" and provenance["algorithm"] == "fourier"
    assert provenance["input_file"] == str(scan["path"].resolve()) and provenance["projections"] == ANGLES
    assert provenance["geometry"]["type"] == "parallel" and "torch" in provenance["software"]
    assert np.allclose(provenance["angles_deg"], scan["angles"])
    no_flats = tmp_path / "no_flats.nxs"
    with h5py.File(scan["path"]) as src, h5py.File(no_flats, "w") as dst:
        src.copy("entry", dst)
        keys = dst["entry/instrument/detector/image_key"]
        keys[...] = np.where(keys[()] == 1, 3, keys[()])  # every flat marked invalid
    args = parser.parse_args(["recon", str(no_flats), "-o", str(tmp_path / "bad.h5")])
    assert args.func(args) == 2
    assert "no flat fields" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()


def test_foreign_nxtomo_without_geometry_is_parallel_and_angles_in_radians_are_read(scan, tmp_path):
    """Another facility's file: entry0000, NXdata layout, radians, a detector pixel in um, no geometry."""
    path = tmp_path / "foreign.nxs"
    with h5py.File(scan["path"]) as src, h5py.File(path, "w") as dst:
        data = dst.create_group("entry0000/data")
        data["data"] = src["entry/instrument/detector/data"][:]
        data["image_key"] = src["entry/instrument/detector/image_key"][:]
        data["rotation_angle"] = np.radians(src["entry/sample/rotation_angle"][:])
        data["rotation_angle"].attrs["units"] = "rad"
        detector = dst.create_group("entry0000/instrument/detector")
        detector["x_pixel_size"] = scan["voxel_mm"] * 1e3
        detector["x_pixel_size"].attrs["units"] = "um"
    out = reconstruct_file(path, tmp_path / "foreign.h5", algorithm="fourier", filter="hann",
                           settings=load_config().recon)
    with h5py.File(out) as h5:
        assert h5["provenance"].attrs["input_entry"] == "/entry0000"
        assert '"type": "parallel"' in h5["provenance"].attrs["geometry"]
        bone = _interior(scan["labels"], Label.BONE)
        assert h5["volume"][:][bone].mean() == pytest.approx(scan["truth"][bone].mean(), rel=0.04)


def test_cone_beam_nxtomo_is_reconstructed_with_fdk(tmp_path):
    """A cone-beam file (geometry type 'cone', distances): counts from exact ellipsoid projections, FDK."""
    geometry = ConeGeometry(np.linspace(0, 360, 120, endpoint=False), 12, 40, 0.03, 4.0, 12.0)
    phantom = shepp_logan_3d(0.18, 2.0)
    lines = project_ellipsoids(phantom, geometry)
    flat, dark = 20000.0, 100.0
    frames = np.concatenate([np.full((2, 12, 40), dark), np.full((3, 12, 40), flat + dark),
                             dark + flat * np.exp(-lines)]).astype(np.uint16)
    keys = np.r_[[2, 2], [1, 1, 1], np.zeros(120, int)]
    angles = np.r_[np.zeros(5), geometry.angles_array]
    path = tmp_path / "cone.nxs"
    _write_nxtomo(path, frames, keys, angles, {"type": "cone", "source_sample_distance": 4.0,
                                               "source_detector_distance": 12.0}, 30e-6, 10e-6)
    out = reconstruct_file(path, tmp_path / "cone.h5", cor=(40 - 1) / 2, settings=load_config().recon)
    expected = rasterise_ellipsoids(phantom, geometry.default_volume(), 2)
    with h5py.File(out) as h5:
        assert h5["provenance"].attrs["algorithm"] == "fdk"
        volume = h5["volume"][:]
    assert volume.shape == (12, 40, 40)
    middle = slice(4, 8)
    assert np.sqrt(np.mean((volume[middle] - expected[middle]) ** 2)) < 0.15  # values 0..2 /mm; edges dominate


@pytest.mark.slow
def test_command_line_calibrates_axis_and_tilt_of_a_cone_beam_file(tmp_path, capsys):
    """`nanoscope recon --calibrate cor,tilt`: a file taken with the detector tilted 1 deg, the axis 2 px off.

    Slow: ~20 s of CPU (20 evaluations of the objective on 45 projections)."""
    true = ConeGeometry(np.linspace(0, 360, 90, endpoint=False), 48, 32, 0.5, 25.0, 125.0, cor=17.5, tilt_deg=1.0)
    phantom = shepp_logan_3d(0.42 * 32 * true.sample_pixel_mm, 1.0, 0.40 * 48 * true.sample_pixel_mm)
    flat, dark = 60000.0, 100.0
    frames = np.concatenate([np.full((2, 48, 32), dark), np.full((3, 48, 32), flat + dark),
                             dark + flat * np.exp(-project_ellipsoids(phantom, true, 2))]).astype(np.uint16)
    path = tmp_path / "tilted.nxs"
    _write_nxtomo(path, frames, np.r_[[2, 2], [1, 1, 1], np.zeros(90, int)], np.r_[np.zeros(5), true.angles_array],
                  {"type": "cone", "source_sample_distance": 25.0, "source_detector_distance": 125.0}, 500e-6, 100e-6)
    config = tmp_path / "calibration.toml"
    config.write_text("[recon]\ncalibration_max_angles = 45\ncalibration_evaluations = 20\n")
    parser = argparse.ArgumentParser(prog="nanoscope")
    add_recon_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["recon", str(path), "-o", str(tmp_path / "cal.h5"), "--cor", "15.5",
                              "--calibrate", "cor,tilt", "--config", str(config)])
    assert args.func(args) == 0
    with h5py.File(tmp_path / "cal.h5") as h5:
        estimate = json.loads(h5["provenance"].attrs["self_calibration"])["calibration"]["estimate"]
        geometry = json.loads(h5["provenance"].attrs["geometry"])
        volume = h5["volume"][:]
    assert estimate["cor"] == pytest.approx(17.5, abs=0.1) and geometry["cor"] == pytest.approx(estimate["cor"])
    assert geometry["tilt_deg"] == pytest.approx(1.0, abs=0.15)
    exact = rasterise_ellipsoids(phantom, true.default_volume(), 2)
    uncalibrated = reconstruct_file(path, tmp_path / "plain.h5", cor=15.5, settings=load_config().recon)
    with h5py.File(uncalibrated) as h5:
        plain = h5["volume"][:]
    assert np.sqrt(np.mean((volume - exact) ** 2)) < 0.6 * np.sqrt(np.mean((plain - exact) ** 2))
    with pytest.raises(SystemExit):
        parser.parse_args(["recon", str(path), "-o", str(tmp_path / "x.h5"), "--calibrate", "cor,yaw"])
    assert "unknown calibration parameter(s) yaw" in capsys.readouterr().err


def test_motion_correction_of_a_parallel_beam_file_undoes_a_jump(tmp_path):
    """`reconstruct_file(..., motion="rigid")`: the specimen jumps 2 px across the beam half way through the scan."""
    geometry = ParallelGeometry(np.linspace(0, 180, 40, endpoint=False), 8, 32, 0.1, cor=15.5)
    phantom = shepp_logan_3d(0.42 * 32 * 0.1, 1.0, 0.40 * 8 * 0.1)
    shifts = np.zeros((40, 3))
    shifts[20:, 0] = 0.2
    flat, dark = 60000.0, 100.0
    frames = np.concatenate([np.full((2, 8, 32), dark), np.full((3, 8, 32), flat + dark),
                             dark + flat * np.exp(-project_ellipsoids(phantom, geometry, 2, shifts))]).astype(np.uint16)
    path = tmp_path / "jump.nxs"
    _write_nxtomo(path, frames, np.r_[[2, 2], [1, 1, 1], np.zeros(40, int)], np.r_[np.zeros(5), geometry.angles_array],
                  {"type": "parallel"}, 100e-6, 100e-6)
    settings = load_config(recon={"calibration_evaluations": 8}).recon
    volumes = {}
    for motion in (None, "rigid"):
        out = reconstruct_file(path, tmp_path / f"motion_{motion}.h5", cor=15.5, motion=motion, settings=settings)
        with h5py.File(out) as h5:
            volumes[motion] = h5["volume"][:]
            record = json.loads(h5["provenance"].attrs["self_calibration"])
    assert record["motion"]["max_shift_mm"] > 0.05  # the jump was found (half of it each side of the mean)
    # The data cannot tell a translation of the whole specimen: the estimate leaves the specimen where that part of
    # the jump puts it, so the reference is the still specimen there (exact projections, FBP).
    theta = torch.deg2rad(torch.tensor(geometry.angles_array, dtype=torch.float64))
    observable = np.insert(unobservable_removed(torch.tensor(shifts[:, [0, 2]]), theta).numpy(), 1, 0, axis=1)
    still = reconstruct(project_ellipsoids(phantom, geometry, 2, shifts - observable), geometry).numpy()
    error = {m: float(np.sqrt(np.mean((v - still) ** 2))) for m, v in volumes.items()}
    assert error["rigid"] < 0.7 * error[None]  # measured 0.019 against 0.043 (photon noise at 6e4 counts)
    with pytest.raises(ReconInputError, match="records no respiratory phase and gate per frame"):
        reconstruct_file(path, tmp_path / "breathing.h5", cor=15.5, motion="respiratory", settings=settings)


def test_a_sessions_breathing_tomograms_joined_reconstruct_with_the_breath_undone(tmp_path):
    """joined_scans.py: two cone-beam files of a breathing specimen, each with its frames' respiratory phase and gate,
    joined (their breaths numbered apart) and reconstructed gate-open, with every frame, and with the breath fitted
    across the axis (``axial=False``) and undone."""
    sample_px = 0.1 * 25.0 / 125.0
    phantom = shepp_logan_3d(0.40 * 40 * sample_px, 1.0, 0.40 * 12 * sample_px)
    direction = np.array([0.8, 0.6, 0.0])  # across the axis: the fit below holds the part along it at 0
    geometries, paths, lab_shifts = [], [], []
    for number, first_angle in enumerate((0.0, 3.0)):
        geometry = ConeGeometry(first_angle + np.linspace(0, 360, 60, endpoint=False), 12, 40, 0.1, 25.0, 125.0)
        phase = np.mod(0.13 + 0.3 * number + np.arange(60) * 2.3 / 60, 1.0)
        active = phase / 0.4  # a raised cosine breath in the first 40 % of the cycle, the gate open from 0.6
        specimen = (2.5 * sample_px * np.where(active < 1, 0.5 * (1 - np.cos(2 * np.pi * np.minimum(active, 1))), 0))
        theta = np.radians(geometry.angles_array)
        d = specimen[:, None] * direction
        lab = np.stack([np.cos(theta) * d[:, 0] - np.sin(theta) * d[:, 1],
                        np.sin(theta) * d[:, 0] + np.cos(theta) * d[:, 1], d[:, 2]], 1)
        frames = np.concatenate([np.full((2, 12, 40), 100.0), np.full((3, 12, 40), 60100.0),
                                 100 + 60000 * np.exp(-project_ellipsoids(phantom, geometry, 2, lab))])
        paths.append(tmp_path / f"breathing_{number}.nxs")
        _write_nxtomo(paths[-1], frames.astype(np.uint16), np.r_[[2, 2], [1, 1, 1], np.zeros(60, int)],
                      np.r_[np.zeros(5), geometry.angles_array],
                      {"type": "cone", "source_sample_distance": 25.0, "source_detector_distance": 125.0},
                      100e-6, 20e-6)
        with h5py.File(paths[-1], "a") as h5:
            h5["entry/frames/respiratory_phase"] = np.r_[np.zeros(5), phase]
            h5["entry/frames/gate"] = np.r_[np.zeros(5), (phase >= 0.6).astype(float)]
        geometries.append(geometry)
        lab_shifts.append(lab)
    settings = load_config(recon={"calibration_evaluations": 5}).recon
    scans = join_scans(paths, 19.5, settings)
    assert scans.line_integrals.shape == (120, 12, 40)
    np.testing.assert_allclose(scans.geometry.angles_array, np.r_[geometries[0].angles_array,
                                                                  geometries[1].angles_array])
    assert not set(scans.breath[:60]) & set(scans.breath[60:])  # each file's breaths are its own
    spec = FilterSpec()
    joined = scans.geometry
    still = reconstruct(project_ellipsoids(phantom, joined, 2), joined, algorithm="fdk").numpy()
    shifts, breath = fit_breathing(scans, spec, settings, axial=False)
    assert not shifts[:, 2].any()
    error = {name: float(np.sqrt(np.mean((volume - still) ** 2))) for name, volume in {
        "uncorrected": all_frames_volume(scans, spec), "corrected": all_frames_volume(scans, spec, shifts),
        "true shifts": all_frames_volume(scans, spec, np.concatenate(lab_shifts))}.items()}
    print(error, breath)
    # measured: RMSE 0.0288 uncorrected, 0.0095 corrected, 0.0095 with the true shifts (5 evaluations a stage)
    assert error["corrected"] < 0.6 * error["uncorrected"]
    assert error["corrected"] < 1.1 * error["true shifts"]
    assert gate_open_volume(scans, spec).shape == still.shape  # 48 of the 120 frames: streaks, no blur
    assert breath["peak_mm"] == pytest.approx(2.5 * sample_px, rel=0.2)
