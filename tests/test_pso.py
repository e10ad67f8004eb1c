"""Position-synchronized output: exact crossing times, the PSO IOC, and PSO-triggered frames."""

from __future__ import annotations

from pathlib import Path

import epics
import numpy as np
import pytest
from conftest import connected, wait_until
from test_camera import attributes, put, read_text

from nanoscope_daq.config import load_config
from nanoscope_daq.devices.detector import path_template
from nanoscope_daq.devices.pso import PositionSyncOutput
from nanoscope_daq.sim.clock import SimClock
from nanoscope_daq.sim.ioc.pso import find_crossing
from nanoscope_daq.sim.models.motion import Axis


@pytest.fixture
def rot() -> Axis:
    """The rotation axis alone: 30 deg/s, ACCL 0.5 s (60 deg/s^2)."""
    return Axis(load_config().stages.rot, SimClock())


def test_crossing_times_are_exact_on_the_trajectory(rot):
    rot.move(90.0, t=10.0)  # 0.5 s ramp over 7.5 deg, cruise at 30 deg/s, ramp down to 90 at 13.5 s
    assert find_crossing(rot, 7.5, +1, 9.0, 11.0) == pytest.approx(10.5, abs=1e-8)
    assert find_crossing(rot, 52.5, +1, 9.0, 13.0) == pytest.approx(12.0, abs=1e-8)
    ramp = find_crossing(rot, 1.875, +1, 10.0, 11.0)  # half-way up the ramp: x = 30 t^2
    assert ramp == pytest.approx(10.25, abs=1e-8)
    assert rot.position_at(ramp) == pytest.approx(1.875, abs=1e-6)


def test_only_a_real_crossing_in_the_direction_of_the_step_counts(rot):
    rot.move(90.0, t=10.0)
    assert find_crossing(rot, 95.0, +1, 9.0, 20.0) is None  # never reached
    assert find_crossing(rot, 45.0, -1, 9.0, 20.0) is None  # crossed upwards, grid runs downwards
    assert find_crossing(rot, 45.0, +1, 12.5, 20.0) is None  # already past when the window opens
    rot.move(-30.0, t=20.0)
    assert find_crossing(rot, 45.0, -1, 19.0, 30.0) == pytest.approx(20.0 + 0.5 + (90 - 7.5 - 45) / 30, abs=1e-8)


@pytest.fixture(scope="module")
def pso(xrm) -> PositionSyncOutput:
    return connected(PositionSyncOutput(xrm.rot.prefix + ":PSO:", name="pso"))


def test_arm_refuses_a_zero_step_and_says_why(pso):
    put(pso.step, 0.0)
    put(pso.count, 3)
    put(pso.arm, 1)
    assert pso.status.get(use_monitor=False) != "Armed"
    assert "STEP is 0" in pso.message.get(use_monitor=False)


def test_disarm_stops_the_pulses(xrm, pso):
    start = xrm.rot.position + 50.0
    put(pso.start, start)
    put(pso.step, 1.0)
    put(pso.count, 10)
    put(pso.arm, 1)
    assert pso.status.get(use_monitor=False) == "Armed"
    assert list(pso.grid()) == pytest.approx(start + np.arange(10))
    put(pso.disarm, 1)
    assert pso.status.get(use_monitor=False) == "Disarmed"
    xrm.rot.move(start + 12.0, wait=True, timeout=30)
    assert pso.fired.get(use_monitor=False) == 0


def test_pso_triggered_frames_carry_angles_within_0_01_deg_of_the_grid(xrm, pso):
    det = xrm.det
    data_dir = Path(det.hdf1.file_path.get())
    det.hdf1.write_path_template = path_template(data_dir)
    count, step, exposure, speed = 24, 1.5, 0.002, 60.0
    start = xrm.rot.position + 5.0
    cam, hdf = det.cam, det.hdf1
    for signal, value in ((cam.a3_binning, "8x8"), (cam.acquire_time, exposure), (cam.trigger_mode, "External"),
                          (cam.image_mode, "Multiple"), (cam.num_images, count), (hdf.file_write_mode, "Stream"),
                          (hdf.num_capture, count), (hdf.file_path, str(data_dir)), (hdf.file_name, "pso")):
        put(signal, value)
    put(hdf.capture, 1)
    put(cam.acquire, 1)
    for signal, value in ((pso.start, start), (pso.step, step), (pso.count, count), (pso.arm, 1)):
        put(signal, value)
    done = pso.done_status(timeout=30)
    assert pso.status.get(use_monitor=False) == "Armed"
    put(xrm.rot.velocity, speed)
    xrm.rot.move(start + step * count + 5.0, wait=True, timeout=30)
    done.wait(30)
    wait_until(lambda: hdf.capture.get(use_monitor=False) == 0, 30, "the PSO frames")
    put(cam.trigger_mode, "Internal")
    assert pso.fired.get(use_monitor=False) == count
    assert epics.caget(cam.prefix + "MissedTriggers_RBV") == 0
    attrs = attributes(Path(read_text(hdf.full_file_name.pvname)))
    grid = start + step * np.arange(count)
    assert len(attrs["EncoderAngle"]) == count
    assert np.abs(attrs["EncoderAngle"] - grid).max() < 0.01
    # RotationAngle is taken at mid-exposure: later than the pulse by half an exposure
    ahead = attrs["RotationAngle"] - grid
    assert np.all(ahead > 0) and np.all(ahead <= speed * exposure / 2 + 1e-6)


def test_external_exposure_mode_exposes_for_the_pulse_width(xrm, pso):
    det = xrm.det
    data_dir = Path(det.hdf1.file_path.get())
    cam, hdf = det.cam, det.hdf1
    start = xrm.rot.position + 3.0
    for signal, value in ((cam.a3_binning, "8x8"), (cam.trigger_mode, "External Exposure"),
                          (cam.image_mode, "Multiple"), (cam.num_images, 3), (hdf.file_write_mode, "Stream"),
                          (hdf.num_capture, 3), (hdf.file_path, str(data_dir)), (hdf.file_name, "width")):
        put(signal, value)
    put(hdf.capture, 1)
    put(cam.acquire, 1)
    for signal, value in ((pso.start, start), (pso.step, 2.0), (pso.count, 3), (pso.width, 0.0125), (pso.arm, 1)):
        put(signal, value)
    xrm.rot.move(start + 8.0, wait=True, timeout=30)
    wait_until(lambda: hdf.capture.get(use_monitor=False) == 0, 30, "the three frames")
    put(cam.trigger_mode, "Internal")
    put(pso.width, 1e-4)
    attrs = attributes(Path(read_text(hdf.full_file_name.pvname)))
    assert list(attrs["ExposureTime"]) == pytest.approx([0.0125] * 3)
