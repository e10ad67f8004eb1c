"""Faults mid-scan: an interlock trip suspends and resumes a fly scan with nothing lost; abort closes everything."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
from bluesky.suspenders import SuspendBoolHigh
from bluesky.utils import RunEngineInterrupted
from conftest import wait_until

from nanoscope_daq.plans import fly_tomo
from nanoscope_daq.plans.safety import AlarmSuspender

ATTRS = "entry/instrument/NDAttributes/"


def test_interlock_trip_mid_fly_scan_suspends_retakes_flats_and_loses_no_angle(fresh_scan_bench):
    bench, xrm = fresh_scan_bench, fresh_scan_bench.xrm

    def trip_then_reset():
        wait_until(lambda: bench.named("start") and xrm.rot.pso.status.get() == "Armed"
                   and xrm.rot.pso.fired.get() > 120, timeout=60, what="a third of the scan")
        xrm.source.trip.put("Trip")
        time.sleep(1.0)
        xrm.source.reset_interlock().wait(10)

    threading.Thread(target=trip_then_reset, daemon=True).start()
    bench.run(fly_tomo(xrm, projections=360, velocity=45.0, exposure_s=0.004, config=bench.config))
    (stop,) = bench.named("stop")
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["flats"] == 12  # before, re-taken after the trip, after
    (event,) = bench.events("tomograms")
    start, end = event["data"]["projections_start"], event["data"]["projections_stop"]
    with h5py.File(event["data"]["file"], "r") as h5:
        encoder = h5[ATTRS + "EncoderAngle"][start:end]
        current = h5[ATTRS + "SourceCurrent"][start:end]
        frame_type = h5[ATTRS + "FrameType"][start:end]
        in_file = h5["entry/data/data"].shape[0]
    projection = frame_type == 0
    valid = projection & (current > 0)
    grid_start, grid_step = event["data"]["grid_start_deg"], event["data"]["grid_step_deg"]
    grid_index = np.rint((encoder[valid] - grid_start) / grid_step).astype(int)
    assert sorted(set(grid_index)) == list(range(360))  # every angle imaged with beam: 0 lost
    assert (~valid).sum() >= 1  # frames taken while the beam was off are kept, not dropped
    assert in_file == xrm.det.hdf1.num_captured.get()  # every frame produced is in the file
    assert xrm.det.cam.missed_triggers.get() == 0
    assert xrm.det.hdf1.dropped_arrays.get() == 0
    (nxs,) = bench.nxtomo.written
    with h5py.File(nxs, "r") as h5:
        keys = h5["entry/instrument/detector/image_key"][()]
        angles = h5["entry/sample/rotation_angle"][()]
    assert (keys == 0).sum() == 360
    assert len(np.unique(np.rint((angles[keys == 0] - grid_start) / grid_step))) == 360
    assert (keys == 3).sum() >= 1
    assert xrm.source.shutter.status.get() == "Closed"


def test_abort_closes_the_shutter_and_leaves_a_readable_file_marked_incomplete(fresh_scan_bench):
    bench, xrm = fresh_scan_bench, fresh_scan_bench.xrm

    def pause_mid_scan():
        wait_until(lambda: bench.named("start") and xrm.rot.pso.status.get() == "Armed"
                   and xrm.rot.pso.fired.get() > 50, timeout=60, what="the scan under way")
        bench.RE.request_pause(defer=False)

    threading.Thread(target=pause_mid_scan, daemon=True).start()
    with pytest.raises(RunEngineInterrupted):
        bench.run(fly_tomo(xrm, projections=360, velocity=45.0, exposure_s=0.004,
                           config=bench.config))
    bench.RE.abort("operator abort")
    (stop,) = bench.named("stop")
    assert stop["exit_status"] == "abort"
    assert xrm.source.shutter.status.get() == "Closed"
    assert xrm.det.hdf1.capture.get(as_string=True) == "Done"
    (nxs,) = bench.nxtomo.written
    with h5py.File(nxs, "r") as h5:
        assert not h5["entry/experiment_complete"][()]
        keys = h5["entry/instrument/detector/image_key"][()]
        frames = h5["entry/instrument/detector/data"]
        assert frames.shape[0] == len(keys)
        assert np.isfinite(frames[-1]).all()
    assert 50 < (keys == 0).sum() < 360


def test_abort_while_flying_stops_the_stage_and_beam_through_the_runengine(fresh_scan_bench):
    """RunEngine.abort() from another thread while the stage spins (no pause first), as a console's abort button."""
    bench, xrm = fresh_scan_bench, fresh_scan_bench.xrm
    aborted = []

    def abort_mid_scan():
        wait_until(lambda: bench.named("start") and xrm.rot.pso.status.get() == "Armed"
                   and xrm.rot.pso.fired.get() > 80, timeout=60, what="the scan under way")
        aborted.append(xrm.rot.pso.fired.get())
        bench.RE.abort("abort button")

    threading.Thread(target=abort_mid_scan, daemon=True).start()
    with pytest.raises(RunEngineInterrupted):
        bench.run(fly_tomo(xrm, projections=360, velocity=45.0, exposure_s=0.004,
                           config=bench.config))
    (stop,) = bench.named("stop")
    assert stop["exit_status"] == "abort" and stop["reason"] == "abort button"
    assert xrm.source.shutter.status.get(use_monitor=False) == "Closed"
    assert xrm.rot.pso.status.get(use_monitor=False) != "Armed"
    assert xrm.rot.motor_done_move.get(use_monitor=False) == 1  # the stage stands still
    assert abs(xrm.rot.user_readback.get(use_monitor=False) - time_and_again(xrm)) < 1e-6
    assert xrm.det.cam.acquire.get(use_monitor=False) == 0
    assert xrm.det.hdf1.capture.get(as_string=True, use_monitor=False) == "Done"
    (nxs,) = bench.nxtomo.written
    with h5py.File(nxs, "r") as h5:
        assert not h5["entry/experiment_complete"][()]
        keys = h5["entry/instrument/detector/image_key"][()]
        frames = h5["entry/instrument/detector/data"]
        assert frames.shape[0] == len(keys) == xrm.det.hdf1.num_captured.get(use_monitor=False)
        assert np.isfinite(frames[-1]).all()
    assert aborted[0] <= (keys == 0).sum() < 360  # every frame exposed before the abort is kept


def time_and_again(xrm) -> float:
    """The stage's position a moment later (it must not have moved meanwhile)."""
    time.sleep(0.3)
    return xrm.rot.user_readback.get(use_monitor=False)


@pytest.mark.parametrize("suspender", [AlarmSuspender, SuspendBoolHigh])
def test_a_trip_while_the_runengine_loop_is_busy_still_suspends(suspender):
    """bluesky's own suspender loses a trip that arrives while a plan holds the loop; ours waits for it."""
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps
    from ophyd import Signal

    alarm = Signal(name="alarm", value=0)
    recovered = []

    def recover():
        recovered.append(time.monotonic())
        yield from bps.null()

    def trip_then_clear():
        time.sleep(0.1)
        alarm.put(1)  # the suspender runs in this thread, while the plan below holds the loop
        time.sleep(1.0)
        alarm.put(0)

    def plan():
        threading.Thread(target=trip_then_clear, daemon=True).start()
        time.sleep(0.5)  # a plan step that blocks the RunEngine's loop, as a slow CA read does
        for _ in range(20):
            yield from bps.sleep(0.1)

    engine = RunEngine({})
    engine.install_suspender(suspender(alarm, sleep=0.1, post_plan=recover))
    engine(plan())
    assert bool(recovered) == (suspender is AlarmSuspender)
