"""Faults of the controlling process: the instrument keeps itself safe, and one scan runs at a time.

The scans here run as a separate ``nanoscope scan`` process, frozen (SIGSTOP) or killed
(SIGKILL) mid fly scan; what is asserted is read from the IOCs over Channel Access.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import h5py
import pytest
from conftest import connected_instrument, ioc_get, wait_until

from nanoscope_daq.plans import PlanParameterError, fly_tomo


def test_a_second_scan_is_refused_while_another_process_holds_the_instrument(fresh_scan_bench):
    bench, xrm = fresh_scan_bench, fresh_scan_bench.xrm
    other = connected_instrument(bench.sim.prefix).wd  # another client: its own identity
    other.stage()
    try:
        binning = xrm.det.cam.a3_binning.get(as_string=True)
        with pytest.raises(PlanParameterError) as refused:
            bench.run(fly_tomo(xrm, projections=90, binning=2, exposure_s=0.004, config=bench.config))
        assert refused.value.parameter == "instrument"
        assert f"in use by {other.identity}" in str(refused.value) and "wait for its scan to end" in str(refused.value)
        assert bench.named("start") == []
        assert xrm.det.cam.a3_binning.get(as_string=True, use_monitor=False) == binning  # nothing changed
    finally:
        other.unstage()
    assert ioc_get(bench.sim.prefix + "WD:OWNER") == ""
    bench.run(fly_tomo(xrm, projections=90, exposure_s=0.004, config=bench.config))  # free again
    assert ioc_get(bench.sim.prefix + "WD:OWNER") == ""  # and given back after the scan


@pytest.mark.slow
@pytest.mark.parametrize("fault", [signal.SIGSTOP, signal.SIGKILL], ids=["frozen", "killed"])
def test_the_instrument_makes_itself_safe_when_the_scan_process_freezes_or_dies(fresh_scan_bench, fault):
    bench, xrm = fresh_scan_bench, fresh_scan_bench.xrm
    sim, prefix = bench.sim, bench.sim.prefix
    source, pso, cam, hdf, wd = xrm.source, xrm.rot.pso, xrm.det.cam, xrm.det.hdf1, xrm.wd
    command = [sys.executable, "-m", "nanoscope_daq", "scan", "fly_tomo", "--prefix", prefix, "--port", str(sim.port),
               "--config", str(bench.config_path), "--projections", "900", "--velocity", "10", "--exposure-s", "0.004"]
    client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: pso.status.get() == "Armed" and source.shutter.status.get() == "Open",
                   timeout=120, what="the fly scan under way")
        lapse_s = float(wd.timeout.get())
        os.kill(client.pid, fault)
        faulted = time.monotonic()

        def safe() -> bool:
            return (source.shutter.status.get() == "Closed" and xrm.rot.motor_done_move.get(use_monitor=False) == 1
                    and pso.status.get(use_monitor=False) != "Armed" and cam.acquire.get(use_monitor=False) == 0
                    and hdf.capture.get(as_string=True, use_monitor=False) == "Done")

        wait_until(safe, timeout=lapse_s + 10, what="the safe state")
        safe_after = time.monotonic() - faulted
        assert safe_after < lapse_s + 3.0  # the lapse, the shutter's travel, the stage's deceleration
        assert wd.owner.get(use_monitor=False) == "" and wd.trips.get(use_monitor=False) == 1
        assert "lapsed" in wd.message.get(use_monitor=False)
        with h5py.File(hdf.full_file_name.get(use_monitor=False), "r") as h5:  # closed cleanly: no SWMR needed
            frames = h5["entry/data/data"].shape[0]
        assert frames == hdf.num_captured.get(use_monitor=False) > 0
    finally:
        client.kill()
        client.wait(10)


def test_render_workers_end_with_a_killed_simulator(fresh_scan_bench):
    """SIGKILL leaves the simulator no chance to stop its workers: they notice and exit themselves."""
    import psutil

    bench = fresh_scan_bench
    bench.run(fly_tomo(bench.xrm, projections=30, exposure_s=0.004, flats=0, darks=0, flats_when="none",
                       config=bench.config))  # frames rendered: the workers are running
    simulator = psutil.Process(bench.sim.pid)
    workers = simulator.children(recursive=True)
    assert workers, "the simulator rendered without worker processes"
    os.kill(bench.sim.pid, signal.SIGKILL)
    bench.sim.proc.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=5)
    running = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]  # a zombie has exited: init reaps it
    assert running == [], [p.cmdline()[-3:] for p in running]


@pytest.mark.slow
def test_ctrl_c_closes_the_shutter_at_once_resumes_and_aborts_with_exit_130(fresh_scan_bench, tmp_path):
    bench, xrm = fresh_scan_bench, fresh_scan_bench.xrm
    source, pso = xrm.source, xrm.rot.pso
    command = [sys.executable, "-m", "nanoscope_daq", "scan", "fly_tomo", "--prefix", bench.sim.prefix,
               "--port", str(bench.sim.port), "--config", str(bench.config_path), "--projections", "900",
               "--velocity", "10", "--exposure-s", "0.004"]
    log = tmp_path / "scan.log"  # a file, not a pipe: the progress bar would fill a pipe nobody reads
    with log.open("w") as output:
        client = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=output, stderr=output, text=True)

    def interrupt_when_flying() -> float:
        wait_until(lambda: pso.status.get() == "Armed" and source.shutter.status.get() == "Open",
                   timeout=120, what="the fly scan under way")
        client.send_signal(signal.SIGINT)
        sent = time.monotonic()
        wait_until(lambda: source.shutter.status.get() == "Closed", timeout=10, what="the shutter closed")
        return time.monotonic() - sent

    try:
        assert interrupt_when_flying() < 1.5  # 1 s to pause, and the shutter's travel
        client.stdin.write("r\n")
        client.stdin.flush()
        assert interrupt_when_flying() < 1.5
        client.stdin.write("a\n")
        client.stdin.flush()
        client.wait(60)
    finally:
        client.kill()
    stderr = log.read_text()
    assert client.returncode == 130, stderr[-2000:]
    assert "interrupted: the scan was aborted" in stderr and "Traceback" not in stderr
    assert source.shutter.status.get(use_monitor=False) == "Closed" and pso.status.get(use_monitor=False) != "Armed"
    assert xrm.det.hdf1.capture.get(as_string=True, use_monitor=False) == "Done"


GROUND_TRUTH_ON_A_FULL_DISK = """
import logging, sys, threading
from pathlib import Path
from nanoscope_daq.config import load_config
from nanoscope_daq.physics.presets import tiny_leg_overrides
from nanoscope_daq.sim.ioc.camera.ground_truth import GroundTruthRecorder

failed = threading.Event()

class Failed(logging.Handler):
    def emit(self, record):
        print(record.getMessage(), flush=True)
        failed.set()

logging.getLogger("nanoscope_daq.sim.ioc.camera.ground_truth").addHandler(Failed(logging.ERROR))
recorder = GroundTruthRecorder(load_config().replace(**tiny_leg_overrides()))
recorder.request(Path(sys.argv[1]), 0.0, 1, 60.0)
sys.exit(0 if failed.wait(240) else 3)
"""


def test_the_ground_truth_writer_on_a_full_disk_leaves_no_partial_file_and_says_so(tmp_path):
    """Files may not grow beyond 64 kB (RLIMIT_FSIZE, inherited by the writer's process): every write fails."""

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    run = subprocess.run([sys.executable, "-c", GROUND_TRUTH_ON_A_FULL_DISK, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, preexec_fn=small_disk)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ground_truth_day0_bin1.h5 not written: File too large" in run.stderr  # the worker's own line
    assert "not written (worker exit code 1;" in run.stdout and "free space there" in run.stdout  # no crash
    assert list(tmp_path.iterdir()) == []  # no .partial, no half file
