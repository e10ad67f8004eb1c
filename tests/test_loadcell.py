"""The loading stage through real Channel Access: caproto IOC + ophyd LoadCell (time_scale 50)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from caproto import AlarmSeverity
from conftest import CAError, ca_read, ca_write, connected
from ophyd.utils import LimitError

from nanoscope_daq.config import load_config
from nanoscope_daq.devices.loadcell import LoadCell, LoadCellAlarm, LoadCellStopped, SpecimenFailed
from nanoscope_daq.devices.signals import CommandRefused

CFG = load_config().loadcell
SPECIMEN = load_config().sim.specimen
# The measured force carries noise on top of the controller's stable band.
FORCE_TOLERANCE_N = CFG.stable_band_n + 6 * SPECIMEN.force_noise_n
MOVE_TIMEOUT_S = 30.0


def connect(sim) -> LoadCell:
    return connected(LoadCell(sim.prefix + "LOAD:", name="load"))


@pytest.fixture(scope="module")
def shared_load(sim):
    """The module simulator's stage, for tests that leave it as they found it."""
    return connect(sim)


@pytest.fixture
def load(fresh_sim):
    """A stage of the test's own, for tests that load, trip or break the specimen."""
    return connect(fresh_sim)


class Recorder:
    """Monitor events of one signal: (value, IOC timestamp)."""

    def __init__(self, signal) -> None:
        self.events: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._signal = signal
        self._cid = signal.subscribe(self._record, run=False)

    def _record(self, value, timestamp, **kwargs) -> None:
        with self._lock:
            self.events.append((value, timestamp))

    def close(self) -> list[tuple[float, float]]:
        self._signal.unsubscribe(self._cid)
        with self._lock:
            return list(self.events)


def pv(load: LoadCell, suffix: str) -> str:
    return load.prefix + suffix


def test_load_to_10_n_completes_when_stable_and_holds_against_relaxation(load):
    dmov, movn, force = Recorder(load.done), Recorder(load.moving), Recorder(load.force)
    load.set(10.0).wait(MOVE_TIMEOUT_S)
    assert abs(load.force.get() - 10.0) <= FORCE_TOLERANCE_N
    assert load.done.get() == 1 and load.holding.get() == 1 and load.control_mode.get() == "Load"
    dmov_events, movn_events, force_events = dmov.close(), movn.close(), force.close()
    dmov_values = [value for value, _ in dmov_events]  # the first is the value at subscription
    assert dmov_values[-2:] == [0, 1] and dmov_values.count(0) == 1  # one clean 1 -> 0 -> 1 pulse
    assert 1 in [value for value, _ in movn_events]
    finished_at = dmov_events[-1][1]
    before_done = [value for value, ts in force_events if ts <= finished_at]
    assert before_done[0] < 1.0 and abs(before_done[-1] - 10.0) <= FORCE_TOLERANCE_N
    extension_done = load.extension.get()
    time.sleep(1.0)  # 50 s of process time: the bone relaxes, the controller follows
    assert abs(load.force.get() - 10.0) <= FORCE_TOLERANCE_N
    assert load.extension.get() - extension_done > 0.002  # crept ~ 0.08 * 10 N / 150 N/mm
    with pytest.raises(CAError, match="loading mode cannot change"):
        ca_write(pv(load, "MODE"), "Tension", notify=True, timeout=5)
    with pytest.raises(CommandRefused, match="loading mode cannot change to Tension while the frame is moving"):
        load.mode.set("Tension").wait(5)
    assert load.mode.get() == "Compression"
    load.stop()
    assert load.holding.get() == 0


def test_force_relaxes_while_the_extension_is_held(load):
    load.set_extension(0.07).wait(MOVE_TIMEOUT_S)  # about 10 N
    force_done, extension_done = load.force.get(), load.extension.get()
    assert force_done > 9.0 and load.holding.get() == 0
    time.sleep(1.0)
    relaxed = load.force.get()
    assert load.extension.get() == extension_done
    assert force_done - relaxed > 0.2
    fully_relaxed = (1 - SPECIMEN.relaxation_fraction) * SPECIMEN.stiffness_n_per_mm * 0.07
    assert relaxed > fully_relaxed - FORCE_TOLERANCE_N
    # Compression mode reads compression as positive; Tension mode flips the signs.
    load.mode.set("Tension").wait(5)  # allowed: nothing moves or holds
    assert load.extension.get() == pytest.approx(-extension_done) and load.force.get() < -9.0


def test_force_limit_trips_the_alarm_and_stops_the_motor(load):
    load.force_limit.set(5.0).wait(5)
    status = load.set_extension(0.2)  # would need 30 N
    with pytest.raises(LoadCellAlarm, match=r"force limit tripped: 5\.\d+ N exceeded the limit 5 N"):
        status.wait(MOVE_TIMEOUT_S)
    assert load.alarm.get() == "Force limit" and "ALM_CLR" in load.alarm_message.get()
    assert ca_read(pv(load, "ALM"), data_type="time").metadata.severity == AlarmSeverity.MAJOR_ALARM
    assert ca_read(pv(load, "FORCE_RBV"), data_type="time").metadata.severity == AlarmSeverity.MAJOR_ALARM
    assert 4.8 < load.force.get() < 5.3 and load.moving.get() == 0 and load.done.get() == 1
    stopped_at = load.extension.get()
    time.sleep(0.3)
    assert load.extension.get() == stopped_at < 0.2
    with pytest.raises(LoadCellAlarm, match=r"force limit alarm is latched.*clear_alarm\(\)"):
        load.set_extension(0.0)
    load.clear_alarm()
    assert load.alarm.get() == "No alarm" and load.alarm_message.get() == ""
    assert ca_read(pv(load, "FORCE_RBV"), data_type="time").metadata.severity == AlarmSeverity.NO_ALARM
    load.set_extension(0.0).wait(MOVE_TIMEOUT_S)
    assert abs(load.force.get()) < 0.5


def test_loading_to_failure_drops_the_force_and_fails_the_status(load):
    load.speed.set(CFG.speed_max_mm_per_min).wait(5)
    force = Recorder(load.force)
    status = load.set(30.0)  # the bone breaks at 24 N first
    with pytest.raises(SpecimenFailed, match=r"specimen failed at 24\.0\d N.*MOUNT"):
        status.wait(MOVE_TIMEOUT_S)
    time.sleep(0.3)
    readings = np.array([value for value, _ in force.close()])
    peak = int(np.argmax(readings))
    assert readings[peak] > SPECIMEN.yield_force_n  # it had yielded before it broke
    assert np.all(np.abs(readings[peak + 1 :]) < 0.05)  # sudden drop to ~0, and it stays there
    assert SPECIMEN.failure_force_n <= load.peak_force.get() < SPECIMEN.failure_force_n + 0.5
    assert load.specimen_state.get() == "Failed" and load.alarm.get() == "Specimen failed"
    assert load.read()["load_specimen_state"]["value"] == "Failed"
    with pytest.raises(LoadCellAlarm, match="clear_alarm"):
        load.set(5.0)
    load.clear_alarm()
    with pytest.raises(SpecimenFailed, match=r"mount a new one \(load\.mount_specimen\(\)\)"):
        load.set(5.0)
    load.mount_specimen()
    assert load.specimen_state.get() == "Intact" and load.peak_force.get() == 0.0
    load.set(5.0).wait(MOVE_TIMEOUT_S)
    assert abs(load.force.get() - 5.0) <= FORCE_TOLERANCE_N


def test_bad_set_points_are_refused_by_the_ioc(shared_load):
    load = shared_load
    moves_before = load.moves_started.get()
    for suffix, value, reason in (
        ("FORCE_LIM", 600.0, "Limits are set to 0.0 and 500.0"),
        ("FORCE_LIM", 0.0, "force limit 0 N is outside the allowed range"),
        ("SPEED", 5.0, "Limits are set to 0.01 and 3.0"),
        ("EXT", 6.0, "Limits are set to -5.0 and 5.0"),
    ):
        with pytest.raises(CAError, match=reason):
            ca_write(pv(load, suffix), value, notify=True, timeout=5)
    ca_write(pv(load, "FORCE"), 50.0, notify=True, timeout=5)
    try:
        with pytest.raises(CAError, match=r"load target 50 N is beyond the force limit"):
            ca_write(pv(load, "GO"), 1, notify=True, timeout=5)
        assert "allowed -40 .. 40 N" in load.message.get()
    finally:
        ca_write(pv(load, "FORCE"), 0.0, notify=True, timeout=5)
    assert load.moves_started.get() == moves_before and load.done.get() == 1
    # Each PV has its own alarm: a refused put does not raise the readbacks' severity.
    assert ca_read(pv(load, "FORCE_RBV"), data_type="time").metadata.severity == AlarmSeverity.NO_ALARM
    assert load.force_limit.get() == CFG.force_limit_default_n and load.speed.get() == CFG.speed_default_mm_per_min


def test_bad_set_points_are_refused_by_the_device_before_motion(shared_load):
    load = shared_load
    moves_before = load.moves_started.get()
    with pytest.raises(LimitError, match=r"target force 50 N is beyond the force limit: allowed -40 \.\. 40 N"):
        load.set(50.0)
    with pytest.raises(LimitError, match=r"target force 600 N is beyond the cell capacity: allowed -500 \.\. 500 N"):
        load.set(600.0)
    with pytest.raises(LimitError, match=r"target extension 7 mm is outside the travel range -5 \.\. 5 mm"):
        load.set_extension(7.0)
    with pytest.raises(LimitError, match=r"load_speed: value 5\.0 outside of range: \[0\.01, 3\.0\]"):
        load.speed.put(5.0)
    with pytest.raises(LimitError, match=r"load_force_limit: value 600\.0 outside of range: \[0\.0, 500\.0\]"):
        load.force_limit.put(600.0)
    assert load.moves_started.get() == moves_before
    assert load.speed.get() == CFG.speed_default_mm_per_min


def test_extension_control_moves_at_the_set_speed(load, fresh_sim):
    idle = Recorder(load.force)
    time.sleep(1.5)
    assert len(idle.close()) <= 3  # quiet: about one readback a second, no spinning
    load.speed.set(0.5).wait(5)
    extension = Recorder(load.extension)
    started = time.monotonic()
    load.set_extension(0.25).wait(MOVE_TIMEOUT_S)
    elapsed = time.monotonic() - started
    events = extension.close()
    assert load.extension.get() == pytest.approx(0.25, abs=1e-9)
    time_scale = float(fresh_sim.argv[fresh_sim.argv.index("--time-scale") + 1])
    travel_s = 0.25 / (0.5 / 60) / time_scale  # 30 process s = 0.6 real s
    assert travel_s < elapsed < travel_s + 5.0
    moving = [(value, ts) for value, ts in events if 0.02 < value < 0.23]
    assert 0.6 * travel_s * 10 < len(moving) <= travel_s * 25  # readbacks at 10-20 Hz while moving
    values, stamps = np.array(moving).T
    slope = np.polyfit(stamps - stamps[0], values, 1)[0]  # mm per real second
    assert slope == pytest.approx(0.5 / 60 * time_scale, rel=0.15)


def test_bluesky_moves_and_reads_it_and_stop_fails_a_pending_move(load):
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps
    from bluesky.plans import count

    documents: list[tuple[str, dict]] = []
    engine = RunEngine({})
    engine(bps.mv(load, 5.0))
    assert abs(load.force.get() - 5.0) <= FORCE_TOLERANCE_N
    assert load.holding.get() == 1  # the RunEngine's end-of-plan stop(success=True) keeps the load
    engine(count([load], num=2), lambda name, doc: documents.append((name, doc)))
    descriptor = next(doc for name, doc in documents if name == "descriptor")
    assert {"load_force", "load_extension", "load_specimen_state"} <= set(descriptor["data_keys"])
    assert descriptor["data_keys"]["load_force"]["units"] == "N"
    assert descriptor["configuration"]["load"]["data"]["load_speed"] == CFG.speed_default_mm_per_min
    events = [doc for name, doc in documents if name == "event"]
    forces = [event["data"]["load_force"] for event in events]
    assert len(forces) == 2 and all(abs(force - 5.0) <= FORCE_TOLERANCE_N for force in forces), forces

    status = load.set(20.0)
    time.sleep(0.1)
    load.stop()
    with pytest.raises(LoadCellStopped, match="stopped before it finished"):
        status.wait(5)
    deadline = time.monotonic() + 5
    while load.done.get() != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert load.done.get() == 1 and load.holding.get() == 0 and load.moving.get() == 0
    assert 5.0 < load.force.get() < 19.0
