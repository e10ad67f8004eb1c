"""Bad input is refused before anything moves or acquires, naming the parameter and the fix; and via the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import pytest
from conftest import ioc_get

from nanoscope_daq.plans import (
    PlanParameterError,
    continuous_loading,
    darks_flats,
    fly_tomo,
    insitu_loading,
    step_tomo,
    time_series,
)

MOUSE = {"subject_id": "V01", "cohort": "OVX", "treatment": "PTH", "day": 14, "anaesthesia": "isoflurane 2%"}

BAD_INPUTS = [
    (fly_tomo, {"projections": 1}, "projections"),
    (fly_tomo, {"projections": 90.5}, "projections"),
    (fly_tomo, {"range_deg": 0.0}, "range_deg"),
    (fly_tomo, {"range_deg": float("nan")}, "range_deg"),
    (fly_tomo, {"range_deg": 180.0}, "range_deg"),  # cone beam: FDK needs 180 deg + the fan angle
    (step_tomo, {"range_deg": -90.0}, "range_deg"),
    (time_series, {"subject": MOUSE, "range_deg": 180.0}, "range_deg"),
    (fly_tomo, {"start_deg": 35990.0}, "range_deg"),  # the run-out passes the rotation limit
    (fly_tomo, {"exposure_s": 0.0}, "exposure_s"),
    (fly_tomo, {"exposure_s": 60.0}, "exposure_s"),
    (fly_tomo, {"exposure_s": 0.02, "velocity": 200.0}, "velocity"),  # a step is shorter than a frame
    (fly_tomo, {"velocity": 5000.0}, "velocity"),  # above the stage's VMAX
    (fly_tomo, {"binning": 3}, "binning"),
    (fly_tomo, {"darks": -1}, "darks"),
    (fly_tomo, {"flats": 2.5}, "flats"),
    (fly_tomo, {"flats_when": "sometimes"}, "flats_when"),
    (fly_tomo, {"kv": 90.0}, "kv"),
    (fly_tomo, {"power_w": 1000.0}, "power_w"),
    (fly_tomo, {"gating": "prospective", "subject": MOUSE}, "gating"),
    (fly_tomo, {"gating": "retrospective"}, "subject"),  # in vivo without subject metadata
    (step_tomo, {"gating": "sometimes"}, "gating"),
    (step_tomo, {"gating": "prospective", "subject": dict(MOUSE, cohort="")}, "subject.cohort"),
    (step_tomo, {"gating": "prospective", "subject": dict(MOUSE, day=-3)}, "subject.day"),
    (step_tomo, {"gating": "prospective", "subject": dict(MOUSE, weight=25)}, "subject"),
    (time_series, {}, "subject"),
    (time_series, {"subject": MOUSE, "tomograms": 0}, "tomograms"),
    (time_series, {"subject": MOUSE, "interval_s": 0.5}, "interval_s"),  # shorter than one tomogram
    (time_series, {"subject": MOUSE, "rotation": "sideways"}, "rotation"),
    (time_series, {"subject": MOUSE, "flats_every": -2}, "flats_every"),
    (time_series, {"subject": MOUSE, "tomograms": 50, "projections": 900}, "dose"),  # over the 1 Gy budget
    (insitu_loading, {"loads_n": []}, "loads_n"),
    (insitu_loading, {"loads_n": [5.0, 45.0]}, "loads_n"),  # above the 40 N force limit
    (insitu_loading, {"hold_s": -1.0}, "hold_s"),
    (continuous_loading, {"speed_mm_per_min": 50.0}, "speed_mm_per_min"),
    (darks_flats, {"darks": 0, "flats": 0}, "darks/flats"),
    (fly_tomo, {"projections": 100_000_000}, "projections"),  # days at 3e-4 deg/s: over scan.max_duration_s
    (step_tomo, {"projections": 50_000}, "projections"),  # hours of stop-and-shoot
    (time_series, {"subject": MOUSE, "tomograms": 400, "interval_s": 600.0, "rotation": "back-and-forth"},
     "projections"),  # 66 h
]


@pytest.mark.parametrize(("geometry", "reported", "fix"), [
    ({"kind": "parallel"}, "'cone'", 'set geometry.kind = "cone"'),
    ({"contrast": "zernike"}, "'absorption'", 'set geometry.contrast = "absorption"'),
])
def test_a_configuration_disagreeing_with_the_instruments_geometry_is_refused(scan_bench, geometry, reported, fix):
    """The simulator reports its geometry (``<P>INST:``); a client configured otherwise scans nothing."""
    xrm = scan_bench.xrm
    assert (xrm.inst.geometry.get(), xrm.inst.contrast.get()) == ("cone", "absorption")
    other = scan_bench.config.replace(geometry=geometry)
    for plan in (fly_tomo(xrm, config=other), step_tomo(xrm, config=other), darks_flats(xrm, config=other)):
        with pytest.raises(PlanParameterError) as refused:
            scan_bench.run(plan)
        assert refused.value.parameter == "geometry" and f"reports {reported}" in refused.value.problem
        assert fix in refused.value.fix
        assert scan_bench.named("start") == []


@pytest.mark.parametrize(("plan", "kwargs", "parameter"), BAD_INPUTS,
                         ids=[f"{p.__name__}-{parameter}-{i}" for i, (p, _, parameter) in enumerate(BAD_INPUTS)])
def test_bad_input_is_refused_before_anything_moves(scan_bench, plan, kwargs, parameter):
    xrm = scan_bench.xrm
    before = (xrm.rot.position, xrm.sx.position, xrm.det.cam.array_counter.get(), xrm.source.shutter.status.get())
    with pytest.raises(PlanParameterError) as refused:
        scan_bench.run(plan(xrm, config=scan_bench.config, **kwargs))
    assert refused.value.parameter == parameter
    assert str(refused.value).startswith(parameter) and refused.value.fix
    assert scan_bench.named("start") == []  # no run was opened
    after = (xrm.rot.position, xrm.sx.position, xrm.det.cam.array_counter.get(), xrm.source.shutter.status.get())
    assert after == before


def test_cli_refuses_bad_values_with_the_same_message_and_runs_a_scan(scan_bench):
    sim = scan_bench.sim
    command = [sys.executable, "-m", "nanoscope_daq", "scan", "fly_tomo", "--prefix", sim.prefix,
               "--port", str(sim.port), "--config", str(scan_bench.config_path)]
    env = dict(os.environ)
    refused = subprocess.run(command + ["--binning", "3"], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2
    assert "binning: 3 is not a binning of the camera; choose one of (1, 2, 4, 8)" in refused.stderr
    ran = subprocess.run(command + ["--projections", "60", "--range-deg", "360", "--darks", "2", "--flats", "2",
                                    "--flats-when", "before"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    lines = ran.stdout.splitlines()
    camera = [line for line in lines if line.startswith("camera file: ")]
    nxs = [line for line in lines if line.startswith("NXtomo file: ")]
    uids = [line for line in lines if line.startswith("run uid: ")]
    assert len(camera) == 1 and len(nxs) == 1 and len(uids) == 1
    assert os.path.exists(nxs[0].removeprefix("NXtomo file: "))
    online = [line.removeprefix("online volume: ") for line in lines if line.startswith("online volume: ")]
    assert len(online) == 1 and online[0].endswith("_000_recon.h5") and os.path.exists(online[0])
    assert "60/60" in ran.stderr  # the progress bar reached every projection


@pytest.mark.slow
def test_a_fresh_instrument_from_the_command_line_source_on_fly_scan_source_off(sim_factory, tmp_path_factory):
    """The README's scanning example on a simulator just started, cold source: nothing but commands."""
    from conftest import start_tiny_sim

    sim, config_path = start_tiny_sim(sim_factory, tmp_path_factory)
    try:
        def scan(*words: str) -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", "nanoscope_daq", "scan", *words, "--prefix", sim.prefix,
                       "--port", str(sim.port), "--config", str(config_path)]
            return subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=300)

        refused = scan("fly_tomo")
        assert refused.returncode == 2 and "nanoscope scan source_on" in refused.stderr
        on = scan("source_on")
        assert on.returncode == 0, on.stderr[-2000:]
        assert ioc_get(sim.prefix + "SRC:STATE_RBV") == "On" and ioc_get(sim.prefix + "SRC:HV_RBV") == "On"
        fly = scan("fly_tomo")  # default parameters
        assert fly.returncode == 0, fly.stderr[-2000:]
        assert "online reconstruction failed" not in fly.stderr  # the default range is one FDK reconstructs
        (nxs,) = [line.removeprefix("NXtomo file: ") for line in fly.stdout.splitlines()
                  if line.startswith("NXtomo file: ")]
        with h5py.File(nxs, "r") as h5:
            keys = h5["entry/instrument/detector/image_key"][()]
            assert (keys == 0).sum() == 900 and bool(h5["entry/experiment_complete"][()])
        off = scan("source_off")
        assert off.returncode == 0, off.stderr[-2000:]
        assert ioc_get(sim.prefix + "SRC:SHUTTER_RBV") == "Closed"
        assert ioc_get(sim.prefix + "SRC:HV_RBV") == "Off" and ioc_get(sim.prefix + "SRC:XRAY_RBV") == "Off"
    finally:
        sim_factory.stop(sim)
