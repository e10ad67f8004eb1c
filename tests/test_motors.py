"""Simulated motor records through real Channel Access: stock EpicsMotor, raw clients,
the rotation stage's continuous rotation, and bluesky plans."""

from __future__ import annotations

import asyncio
import threading
import time

import epics
import numpy as np
import pytest
from conftest import CAError, ca_write, connected, wait_until
from ophyd import EpicsMotor
from ophyd.utils import LimitError

from nanoscope_daq.config import load_config
from nanoscope_daq.devices.stages import RotationStage
from nanoscope_daq.sim.clock import SimClock
from nanoscope_daq.sim.ioc.motor import MotorRecordIOC
from nanoscope_daq.sim.models.motion import Axis

# Default config (default_config.toml): SX 2 mm/s, ACCL 0.2 s, limits +-25 mm;
# SY 1 mm/s, ACCL 0.2 s; ROT 30 deg/s, ACCL 0.5 s, VMAX 720 deg/s.
MAJOR = 2


class Recorder:
    """Collects (value, IOC timestamp) of an ophyd signal's monitor events."""

    def __init__(self, signal) -> None:
        self.events: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._signal = signal
        self._cid = signal.subscribe(self._on_event, run=False)

    def _on_event(self, value, timestamp, **_) -> None:
        with self._lock:
            self.events.append((value, timestamp))

    @property
    def values(self) -> list:
        with self._lock:
            return [v for v, _ in self.events]

    def close(self) -> None:
        self._signal.unsubscribe(self._cid)


def let_ophyd_settle() -> None:
    """After a failed move, give ophyd's threads time to finish with it before the next move.

    ophyd races there (bluesky/ophyd#782): ``_done_moving`` clears the done-subscriptions
    after running them, dropping those of a move issued meanwhile, and a failed MoveStatus
    puts STOP from a callback thread, which stops a move issued right after.
    """
    time.sleep(0.1)


@pytest.fixture(scope="module")
def sx(sim):
    return connected(EpicsMotor(sim.prefix + "SX", name="sx"))


@pytest.fixture(scope="module")
def sy(sim):
    return connected(EpicsMotor(sim.prefix + "SY", name="sy"))


@pytest.fixture(scope="module")
def sz(sim):
    return connected(EpicsMotor(sim.prefix + "SZ", name="sz"))


@pytest.fixture(scope="module")
def rot(xrm) -> RotationStage:
    return xrm.rot


def test_stock_epics_motor_moves_and_reads_back(sx):
    status = sx.move(1.5, wait=False)
    status.wait(timeout=10)
    assert status.success
    assert sx.position == pytest.approx(1.5, abs=1e-4)
    assert sx.user_setpoint.get() == 1.5
    assert sx.motor_done_move.get() == 1 and sx.motor_is_moving.get() == 0
    assert sx.egu == "mm" and sx.precision == 4
    reading = sx.read()
    assert reading["sx"]["value"] == pytest.approx(1.5, abs=1e-4)


def test_zero_length_move_completes_and_pulses_dmov(sx):
    sx.move(0.5, wait=True, timeout=10)
    dmov = Recorder(sx.motor_done_move)
    try:
        status = sx.move(0.5, wait=False)
        status.wait(timeout=5)
        assert status.success
        wait_until(lambda: dmov.values[-2:] == [0, 1], what="DMOV 1->0->1")
    finally:
        dmov.close()


def test_retarget_mid_move_reverses_smoothly(sx):
    sx.move(0.0, wait=True, timeout=10)
    rbv = Recorder(sx.user_readback)
    try:
        first = sx.move(10.0, wait=False)
        wait_until(lambda: sx.position > 1.0, what="the first move under way")
        second = sx.move(-1.0, wait=False)
        second.wait(timeout=15)
    finally:
        rbv.close()
    assert first.done and not first.success  # ophyd fails a superseded move's status
    assert second.success
    assert sx.position == pytest.approx(-1.0, abs=1e-4)
    positions = np.array([v for v, _ in rbv.events])
    times = np.array([t for _, t in rbv.events])
    turn = positions.max()
    assert 1.0 < turn < 10.0
    # No velocity jump at the reversal: on a 20 ms grid of the IOC-stamped readback the
    # speed changes by at most 10 mm/s^2 x 20 ms = 0.2 mm/s (a jump would be 4 mm/s).
    grid = np.arange(times[0], times[-1], 0.02)
    velocity = np.diff(np.interp(grid, times, positions)) / 0.02
    assert np.abs(np.diff(velocity)).max() < 1.0


def test_stop_mid_move_decelerates_and_leaves_val_where_it_stopped(sy):
    sy.move(0.0, wait=True, timeout=10)
    status = sy.move(5.0, wait=False)
    wait_until(lambda: sy.position > 0.5, what="the move under way")
    at_stop = sy.position
    sy.stop()
    wait_until(lambda: sy.motor_done_move.get() == 1 and not sy.moving, what="rest after STOP")
    wait_until(lambda: status.done, what="the interrupted move's status to finish")
    assert at_stop < sy.position < 5.0 - 1.0
    assert sy.user_setpoint.get() == pytest.approx(sy.position, abs=1e-4)
    assert sy.motor_stop.get() == 0


def test_ophyd_limit_error_before_any_motion(sx):
    dmov = Recorder(sx.motor_done_move)
    setpoint = sx.user_setpoint.get()
    try:
        assert sx.limits == (-25.0, 25.0)
        with pytest.raises(LimitError):
            sx.move(30.0, wait=False)
        time.sleep(0.2)
    finally:
        dmov.close()
    assert dmov.values == []
    assert sx.user_setpoint.get() == setpoint


def test_ioc_refuses_out_of_range_put_from_raw_clients(sim, sx):
    pv = sim.prefix + "SX"
    sx.move(0.25, wait=True, timeout=10)
    with pytest.raises(CAError, match=r"outside the soft limits \[-25.0, 25.0\]"):
        ca_write(pv + ".VAL", 40.0, notify=True, timeout=5)
    dmov = Recorder(sx.motor_done_move)
    try:
        epics.caput(pv + ".VAL", -40.0, wait=True, timeout=5)  # pyepics cannot see a put failure...
        wait_until(lambda: dmov.values[-2:] == [0, 1], what="DMOV pulse of a refused put")
    finally:
        dmov.close()
    # ... so the record shows it: LVIO, an alarm on the readback, VAL and position unchanged.
    assert epics.caget(pv + ".LVIO") == 1
    assert epics.caget(pv + ".VAL") == 0.25
    assert epics.PV(pv + ".RBV").get_with_metadata(form="time", use_monitor=False)["severity"] == MAJOR
    assert sx.position == pytest.approx(0.25, abs=1e-4)
    # The next accepted move clears the violation and the alarm.
    let_ophyd_settle()
    sx.move(0.0, wait=True, timeout=10)
    assert epics.caget(pv + ".LVIO") == 0
    assert epics.PV(pv + ".RBV").get_with_metadata(form="time", use_monitor=False)["severity"] == 0


def test_ophyd_move_fails_clearly_when_the_ioc_refuses(sim, sz):
    """A move the IOC refuses (here: SPMG=Stop) fails the ophyd status instead of hanging."""
    pv = sim.prefix + "SZ"
    epics.caput(pv + ".SPMG", "Stop", wait=True)
    try:
        status = sz.move(1.0, wait=False)
        with pytest.raises(Exception):  # noqa: B017 -- refused or timed out: either is the stop working
            status.wait(timeout=5)
        assert status.done and not status.success
    finally:
        epics.caput(pv + ".SPMG", "Go", wait=True)
    let_ophyd_settle()
    status = sz.move(0.1, wait=False)
    status.wait(timeout=10)
    assert status.success


def test_high_limit_change_reaches_ophyd(sx):
    try:
        sx.high_limit_travel.put(5.0, wait=True)
        wait_until(lambda: sx.limits == (-25.0, 5.0), what="ophyd to see HLM=5")
        with pytest.raises(LimitError):
            sx.move(6.0, wait=False)
        sx.low_limit_travel.put(-3.0, wait=True)
        wait_until(lambda: sx.limits == (-3.0, 5.0), what="ophyd to see LLM=-3")
    finally:
        sx.set_lim(-25.0, 25.0)
    wait_until(lambda: sx.limits == (-25.0, 25.0), what="limits restored")


def test_move_duration_matches_the_trapezoid(sy):
    sy.move(0.0, wait=True, timeout=10)
    dmov = Recorder(sy.motor_done_move)
    try:
        sy.move(2.0, wait=True, timeout=10)  # 2 mm at 1 mm/s + one 0.2 s ramp = 2.2 s
    finally:
        dmov.close()
    (start_value, start), (end_value, end) = dmov.events[-2:]
    assert (start_value, end_value) == (0, 1)
    assert end - start == pytest.approx(2.2, abs=0.05)


def test_readback_updates_at_least_100_hz_while_rotating(sim, rot):
    stamps: list[float] = []
    monitor = epics.PV(sim.prefix + "ROT.RBV", form="time", auto_monitor=True,
                       callback=lambda timestamp=None, **_: stamps.append(time.monotonic()))
    assert monitor.wait_for_connection(timeout=5)
    try:
        rot.spin.set(30.0).wait(timeout=10)
        stamps.clear()
        time.sleep(1.0)
        received = list(stamps)
    finally:
        rot.spin.set(0.0).wait(timeout=10)
        monitor.clear_callbacks()
        monitor.disconnect()
    rate = (len(received) - 1) / (received[-1] - received[0])
    assert rate >= 100.0, f"RBV monitor rate {rate:.0f} Hz"


def test_continuous_rotation_and_stop(sim, rot):
    pv = sim.prefix + "ROT"
    status = rot.spin.set(-90.0)
    status.wait(timeout=10)
    assert epics.caget(pv + ".JOGR") == 1 and rot.moving
    p0, t0 = rot.position, time.monotonic()
    time.sleep(0.5)
    p1, t1 = rot.position, time.monotonic()
    assert (p1 - p0) / (t1 - t0) == pytest.approx(-90.0, rel=0.15)
    assert epics.caget(pv + ".TDIR") == 0
    rot.spin.set(0.0).wait(timeout=10)
    assert rot.motor_done_move.get() == 1 and epics.caget(pv + ".JOGR") == 0
    time.sleep(0.1)
    assert rot.user_setpoint.get() == pytest.approx(rot.position, abs=1e-3)


def test_spin_rejects_speed_above_vmax_and_stops_on_stop(rot):
    with pytest.raises(ValueError, match=r"exceeds the stage's max velocity 720.0 deg/s \(VMAX\)"):
        rot.spin.set(1000.0)
    rot.spin.set(45.0).wait(timeout=10)
    rot.stop()
    wait_until(lambda: rot.motor_done_move.get() == 1, what="rest after STOP")
    assert rot.spin.forward.get() == 0


def test_velocity_above_vmax_is_refused_with_a_clear_error(sim, rot, sx):
    with pytest.raises(CAError, match=r"exceeds the max velocity \(VMAX\) 10.0 mm/s"):
        ca_write(sim.prefix + "SX.VELO", 50.0, notify=True, timeout=5)
    assert sx.velocity.get(use_monitor=False) == 2.0
    with pytest.raises(LimitError):  # RotationStage checks VELO against VMAX before writing
        rot.velocity.put(800.0)
    with pytest.raises(CAError, match=r"acceleration time \(ACCL\) must be > 0"):
        ca_write(sim.prefix + "SX.ACCL", 0.0, notify=True, timeout=5)


def test_lowering_vmax_reaches_the_rotation_stage_limits(rot):
    try:
        rot.max_velocity.put(100.0, wait=True)
        wait_until(lambda: rot.velocity.limits == (0.0, 100.0), what="VELO limits to follow VMAX")
        with pytest.raises(LimitError):
            rot.velocity.put(150.0)
    finally:
        rot.max_velocity.put(720.0, wait=True)


def test_bluesky_scan_runs_to_completion(sx, sz):
    from bluesky import RunEngine
    from bluesky import plans as bp

    sx.move(0.0, wait=True, timeout=10)
    engine = RunEngine({})
    events = []
    engine(bp.scan([sz], sx, 0.0, 1.0, 3), lambda name, doc: events.append(doc) if name == "event" else None)
    assert [e["data"]["sx"] for e in events] == pytest.approx([0.0, 0.5, 1.0], abs=1e-4)


def test_set_current_position_shifts_offset_and_user_limits(sim, sz):
    pv = sim.prefix + "SZ"
    sz.move(1.0, wait=True, timeout=10)
    dial = epics.caget(pv + ".DRBV", use_monitor=False)
    try:
        sz.set_current_position(4.0)  # SET=Set, VAL=4, SET=Use (FOFF=Variable: OFF changes)
        wait_until(lambda: sz.position == pytest.approx(4.0, abs=1e-4), what="RBV at the new position")
        assert sz.user_offset.get(use_monitor=False) == pytest.approx(3.0)
        assert epics.caget(pv + ".DRBV", use_monitor=False) == pytest.approx(dial)
        wait_until(lambda: sz.limits == pytest.approx((-7.0, 13.0)), what="user limits shifted by OFF")
        sz.move(5.0, wait=True, timeout=10)
        assert epics.caget(pv + ".DRBV", use_monitor=False) == pytest.approx(2.0, abs=1e-4)
    finally:
        sz.user_offset.put(0.0, wait=True)
    wait_until(lambda: sz.limits == (-10.0, 10.0), what="limits back with OFF=0")
    assert sz.position == pytest.approx(2.0, abs=1e-4)


def test_tweak_relative_dial_and_raw_moves(sim, sz):
    pv = sim.prefix + "SZ"
    sz.move(0.0, wait=True, timeout=10)

    def put_and_settle(field: str, value) -> float:
        dmov = Recorder(sz.motor_done_move)
        try:
            epics.caput(pv + field, value, wait=True)
            wait_until(lambda: dmov.values[-2:] == [0, 1], what=f"{field} move to finish")
        finally:
            dmov.close()
        return epics.caget(pv + ".RBV", use_monitor=False)

    epics.caput(pv + ".TWV", 0.5, wait=True)
    assert put_and_settle(".TWF", 1) == pytest.approx(0.5, abs=1e-4)
    assert put_and_settle(".TWR", 1) == pytest.approx(0.0, abs=1e-4)
    assert put_and_settle(".RLV", -0.25) == pytest.approx(-0.25, abs=1e-4)
    assert epics.caget(pv + ".RLV") == 0.0
    assert put_and_settle(".DVAL", 0.75) == pytest.approx(0.75, abs=1e-4)
    assert put_and_settle(".RVAL", 1000) == pytest.approx(0.1, abs=1e-4)  # MRES 1e-4 mm/step
    assert epics.caget(pv + ".VAL") == pytest.approx(0.1)
    assert epics.caget(pv + ".RRBV", use_monitor=False) == 1000 == epics.caget(pv + ".REP", use_monitor=False)


def test_home_travels_to_dial_zero(sim, sz):
    pv = sim.prefix + "SZ"
    sz.move(0.6, wait=True, timeout=10)
    status = sz.home("reverse", wait=False)
    status.wait(timeout=10)
    assert sz.position == pytest.approx(0.0, abs=1e-4)
    assert epics.caget(pv + ".ATHM") == 1 and epics.caget(pv + ".HOMR") == 0
    assert epics.caget(pv + ".MSTA") & (1 << 14)  # homed


def test_pause_holds_a_move_until_go(sim, sz):
    pv = sim.prefix + "SZ"
    sz.move(0.0, wait=True, timeout=10)
    epics.caput(pv + ".SPMG", "Pause", wait=True)
    try:
        status = sz.move(0.5, wait=False)
        time.sleep(0.3)
        assert not status.done and sz.position == pytest.approx(0.0, abs=1e-4)
        assert sz.motor_done_move.get() == 0
    finally:
        epics.caput(pv + ".SPMG", "Go", wait=True)
    status.wait(timeout=10)
    assert status.success and sz.position == pytest.approx(0.5, abs=1e-4)


def test_record_runs_no_task_while_idle():
    """In the IOC itself: motion is followed by a task that exists only while moving."""

    async def scenario() -> tuple[int, int, int]:
        ioc = MotorRecordIOC("IDLE:SX", Axis(load_config().stages.sx, SimClock()))
        await ioc.initialize()
        idle = len(asyncio.all_tasks())
        await ioc.motor.write(0.02)  # triangular, 0.13 s
        moving = len(asyncio.all_tasks())
        await asyncio.sleep(0.4)
        return idle, moving, len(asyncio.all_tasks())

    idle, moving, after = asyncio.run(scenario())
    assert (moving, after) == (idle + 1, idle)


def test_move_while_spinning_ends_the_jog_at_the_target(sim, rot):
    rot.spin.set(60.0).wait(timeout=10)
    target = round(rot.position) + 45.0
    status = rot.move(target, wait=False)
    status.wait(timeout=10)
    assert status.success
    assert rot.position == pytest.approx(target, abs=1e-3)
    assert epics.caget(sim.prefix + "ROT.JOGF", use_monitor=False) == 0
