"""The simulated physiology monitor through real Channel Access: rate, gate, alarms, limits."""

from __future__ import annotations

import threading
import time

import epics
import numpy as np
import pytest
from conftest import TEST_TIME_SCALE, ca_write, connected

from nanoscope_daq.config import ConfigError, load_config
from nanoscope_daq.devices.physiology import PhysiologyMonitor
from nanoscope_daq.sim.clock import SimClock
from nanoscope_daq.sim.ioc.physiology import HISTORY_MAX_POINTS, PhysiologyIOC
from nanoscope_daq.sim.models.physiology import PhysiologyModel

CONFIG = load_config()
PHYS = CONFIG.sim.physiology
ALARMS = CONFIG.physiology
RECORD_S = 8.0


def connected_monitor(sim) -> PhysiologyMonitor:
    return connected(PhysiologyMonitor(sim.prefix + "PHYS:", name="physio"))


@pytest.fixture(scope="module")
def monitor(sim):
    return connected_monitor(sim)


class Recording:
    """(server timestamp, value) of every monitor update of a few PVs over a while."""

    def __init__(self, prefix: str, names: list[str], seconds: float) -> None:
        self.updates: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        lock = threading.Lock()

        def record(pvname=None, value=None, timestamp=None, **kwargs):
            with lock:
                self.updates[pvname.rsplit(":", 1)[1]].append((timestamp, value))

        pvs = [epics.PV(prefix + name, form="time", callback=record) for name in names]
        for pv in pvs:
            assert pv.wait_for_connection(10), pv.pvname
        time.sleep(seconds)
        for pv in pvs:
            pv.clear_callbacks()
            pv.disconnect()

    def array(self, name: str) -> np.ndarray:
        """Updates after the initial value, as rows (timestamp, value)."""
        return np.array(self.updates[name][1:], dtype=float)


@pytest.fixture(scope="module")
def recording(sim) -> Recording:
    return Recording(sim.prefix + "PHYS:", ["GATE", "PHASE", "RESP", "RATE"], RECORD_S)


def at_same_instant(updates: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """Values of ``updates`` published with exactly the timestamps ``stamps`` (one loop pass)."""
    index = np.searchsorted(updates[:, 0], stamps)
    index = np.clip(index, 0, len(updates) - 1)
    assert np.allclose(updates[index, 0], stamps, rtol=0, atol=1e-6), "each gate edge comes with a phase sample"
    return updates[index, 1]


def test_rate_is_physiological_and_follows_the_seeded_breath_sequence(recording):
    rates = recording.array("RATE")[:, 1]
    assert len(rates) >= RECORD_S * 40 / 60, "RATE updates once per breath"
    assert np.all((rates >= 40) & (rates <= 120))
    assert np.ptp(rates) > 0.5, "breath-to-breath variability"

    # The simulator's breaths are the seeded model's breaths (drift in process time, same scale).
    model = PhysiologyModel(PHYS, ALARMS, SimClock(TEST_TIME_SCALE), seed=CONFIG.sim.seed)
    starts = model.breath_starts(0.0, 600.0)
    expected = 60.0 / np.diff(starts)
    first = np.flatnonzero(np.isclose(expected, rates[0], rtol=1e-12, atol=0))
    assert len(first) == 1
    assert np.allclose(expected[first[0] : first[0] + len(rates)], rates, rtol=1e-12, atol=0)


def test_gate_duty_cycle_matches_gate_fraction(recording):
    gate = recording.array("GATE")
    assert np.all(np.diff(gate[:, 1]) != 0), "GATE is published on its edges only"
    opens = gate[gate[:, 1] == 1, 0]
    closes = gate[gate[:, 1] == 0, 0]
    assert len(opens) >= 5
    # Whole cycles from the first opening to the last one.
    cycle_time = opens[-1] - opens[0]
    open_time = sum(closes[closes > t][0] - t for t in opens[:-1])
    assert open_time / cycle_time == pytest.approx(PHYS.gate_fraction, abs=0.04)


def test_gate_edges_fall_on_the_phase_of_end_expiration(recording):
    gate, phase = recording.array("GATE"), recording.array("PHASE")
    opening_phase = at_same_instant(phase, gate[gate[:, 1] == 1, 0])
    closing_phase = at_same_instant(phase, gate[gate[:, 1] == 0, 0])
    # Edges are scheduled, not sampled: typically a few ms late (0.01 of a cycle is ~8 ms);
    # a busy CPU may delay one now and then.
    lateness = np.concatenate([opening_phase - (1 - PHYS.gate_fraction), closing_phase])
    assert np.all((lateness >= 0) & (lateness < 0.1))
    assert np.median(lateness) < 0.01


def test_chest_is_still_while_the_gate_is_open(recording):
    gate, resp = recording.array("GATE"), recording.array("RESP")
    state = np.searchsorted(gate[:, 0], resp[:, 0], side="right") - 1
    inside = state >= 0
    gate_open = np.zeros(len(resp), dtype=bool)
    gate_open[inside] = gate[state[inside], 1] == 1
    assert gate_open.sum() > 50 and (~gate_open).sum() > 50
    assert np.all(resp[gate_open, 1] == 0.0), "end-expiratory pause: no displacement"
    assert resp[~gate_open, 1].max() > 0.5 * PHYS.respiration_amplitude_mm


def test_wait_for_gate_finishes_at_the_next_opening(monitor):
    for _ in range(3):
        start = time.monotonic()
        monitor.wait_for_gate(timeout=5).wait()
        elapsed = time.monotonic() - start
        phase = monitor.phase.get(use_monitor=False)
        assert monitor.gate.get() == 1
        assert 1 - PHYS.gate_fraction <= phase <= 1 - PHYS.gate_fraction + 0.15
        assert elapsed < 60 / 40 + 0.5  # within one breath at the slowest rate


def test_readings_configuration_and_history(monitor):
    reading = monitor.read()
    assert {"physio_rate", "physio_phase", "physio_gate", "physio_heart_rate", "physio_temperature"} == reading.keys()
    heart_rate = reading["physio_heart_rate"]["value"]
    assert heart_rate == pytest.approx(PHYS.heart_rate_bpm, abs=5 * PHYS.heart_rate_drift_bpm)
    assert reading["physio_temperature"]["value"] == pytest.approx(PHYS.body_temperature_c, abs=1.0)
    config = monitor.read_configuration()
    assert config["physio_temperature_low"]["value"] == ALARMS.temperature_alarm_low_c
    assert config["physio_rate_high"]["value"] == ALARMS.respiration_alarm_high_bpm

    history = monitor.history.get(use_monitor=False)
    assert len(history) == round(PHYS.history_s * PHYS.waveform_rate_hz)
    assert monitor.history_step.get() == pytest.approx(1 / PHYS.waveform_rate_hz)
    assert history.min() == 0.0 and 0 < history.max() < 2 * PHYS.respiration_amplitude_mm


@pytest.mark.parametrize(
    "vital, low, high, words",
    [
        ("temperature", 38.0, 39.5, ["body temperature", "below the low limit 38 C"]),
        ("heart_rate", 250.0, 300.0, ["heart rate", "above the high limit 300 bpm"]),
        ("rate", 30.0, 35.0, ["respiration rate", "above the high limit 35 bpm"]),
    ],
)
def test_alarm_raised_by_a_limit_inside_the_value_and_cleared_when_restored(monitor, vital, low, high, words):
    defaults = {
        "temperature": (ALARMS.temperature_alarm_low_c, ALARMS.temperature_alarm_high_c),
        "heart_rate": (ALARMS.heart_rate_alarm_low_bpm, ALARMS.heart_rate_alarm_high_bpm),
        "rate": (ALARMS.respiration_alarm_low_bpm, ALARMS.respiration_alarm_high_bpm),
    }[vital]
    assert monitor.alarm.get(use_monitor=False) == 0  # OK
    try:
        monitor.set_alarm_limits(vital, low, high).wait(10)
        assert monitor.alarm.get(use_monitor=False) == 1  # ALARM
        message = monitor.alarm_message.get(use_monitor=False)
        for word in words:
            assert word in message
        vital_pv = {"temperature": monitor.temperature, "heart_rate": monitor.heart_rate, "rate": monitor.rate}[vital]
        assert epics.PV(vital_pv.pvname).get_with_metadata(form="time", use_monitor=False)["severity"] == 2  # MAJOR
    finally:
        monitor.set_alarm_limits(vital, *defaults).wait(10)
    assert monitor.alarm.get(use_monitor=False) == 0
    assert monitor.alarm_message.get(use_monitor=False) == ""


def test_bad_limits_are_refused_by_ioc_and_device(monitor, sim):
    pv = sim.prefix + "PHYS:"
    with pytest.raises(Exception, match="ECA_PUTFAIL") as info:
        ca_write(pv + "TEMP_LO", 40.0, notify=True, timeout=5)
    refusal = bytes(info.value.args[0].error_message).rstrip(b"\0").decode()
    assert "low limit (40 C) must be below the high limit (39.5 C)" in refusal
    assert monitor.temperature_low.get(use_monitor=False) == ALARMS.temperature_alarm_low_c
    assert "must be below" in monitor.message.get(use_monitor=False)

    with pytest.raises(ValueError, match="low alarm limit 100 bpm must be below the high limit 90 bpm"):
        monitor.set_alarm_limits("rate", 100, 90)
    with pytest.raises(ValueError, match="unknown vital 'pulse'"):
        monitor.set_alarm_limits("pulse", 1, 2)

    # Moving both limits above the present high limit works: the device orders the puts.
    try:
        monitor.set_alarm_limits("temperature", 40.0, 41.0).wait(10)
        assert (monitor.temperature_low.get(use_monitor=False), monitor.temperature_high.get(use_monitor=False)) == (
            40.0,
            41.0,
        )
    finally:
        defaults = (ALARMS.temperature_alarm_low_c, ALARMS.temperature_alarm_high_c)
        monitor.set_alarm_limits("temperature", *defaults).wait(10)


def test_a_history_longer_than_the_pv_holds_is_a_configuration_error():
    config = load_config(sim={"physiology": {"history_s": 100.0}}).sim.physiology
    expected = (r"sim.physiology.history_s \* sim.physiology.waveform_rate_hz = 5000 samples"
                rf".*at most {HISTORY_MAX_POINTS}")
    with pytest.raises(ConfigError, match=expected):
        PhysiologyIOC("X:PHYS:", PhysiologyModel(config, ALARMS, SimClock(1.0)))
