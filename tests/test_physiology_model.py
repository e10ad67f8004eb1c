"""The mouse model alone: seeded determinism, breath shape, gate window, drift, alarms."""

from __future__ import annotations

import numpy as np
import pytest

from nanoscope_daq.config import load_config
from nanoscope_daq.sim.clock import SimClock
from nanoscope_daq.sim.models.physiology import RATE_DRIFT_BOUNDS, LimitRefused, PhysiologyModel

CONFIG = load_config().sim.physiology
ALARMS = load_config().physiology


def make_model(seed: int = 0, time_scale: float = 1.0, **overrides) -> PhysiologyModel:
    config = load_config(sim={"physiology": overrides}).sim.physiology if overrides else CONFIG
    return PhysiologyModel(config, ALARMS, SimClock(time_scale), seed=seed)


def test_same_seed_same_mouse_whatever_the_order_of_questions():
    grid = np.linspace(0, 120, 20001)
    in_order = make_model(seed=7)
    backwards = make_model(seed=7)
    backwards.phase_at(300.0)  # generate far ahead first
    assert np.array_equal(in_order.displacement_at(grid), backwards.displacement_at(grid))
    assert np.array_equal(in_order.phase_at(grid), backwards.phase_at(grid))
    assert not np.array_equal(make_model(seed=8).phase_at(grid), in_order.phase_at(grid))


def test_phase_rises_linearly_within_each_breath_and_restarts_at_inspiration():
    model = make_model()
    starts = model.breath_starts(0.0, 60.0)
    assert starts[0] == 0.0 and len(starts) > 40
    periods = np.diff(starts)
    for start, period in zip(starts[:-1], periods):
        t = start + period * np.array([0.0, 0.25, 0.5, 0.999])
        assert model.phase_at(t) == pytest.approx([0.0, 0.25, 0.5, 0.999], abs=1e-9)
    grid = np.linspace(0, 60, 60001)
    phase = model.phase_at(grid)
    assert np.all((phase >= 0) & (phase < 1))
    drops = np.flatnonzero(np.diff(phase) < 0)
    assert len(drops) == np.count_nonzero((starts > 0) & (starts < 60)), "phase falls only at a new inspiration"


def test_gate_window_is_the_last_gate_fraction_of_every_cycle():
    model = make_model()
    starts = model.breath_starts(0.0, 120.0)
    periods = np.diff(starts)
    opening = starts[:-1] + (1 - CONFIG.gate_fraction) * periods
    assert not np.any(model.gated_at(opening - 1e-9))
    assert np.all(model.gated_at(opening + 1e-9))
    assert np.all(model.gated_at(starts[1:] - 1e-9)) and not np.any(model.gated_at(starts[1:] + 1e-9))
    # Duty cycle over whole breaths: exactly gate_fraction up to the sampling grid.
    grid = np.arange(starts[0], starts[-1], 1e-4)
    assert model.gated_at(grid).mean() == pytest.approx(CONFIG.gate_fraction, abs=2e-4)
    # next_gate_edge walks the same edges.
    edges, t = [], 0.0
    while t < 10:
        t = model.next_gate_edge(t)
        edges.append(t)
    expected = np.sort(np.concatenate([opening, starts[1:]]))
    assert edges == pytest.approx(expected[: len(edges)], abs=1e-12)


def test_breath_shape_inspiration_expiration_then_a_still_pause():
    model = make_model()
    starts = model.breath_starts(0.0, 30.0)
    for start, period in zip(starts[:-1], np.diff(starts)):
        active = min(CONFIG.breath_active_s, (1 - CONFIG.gate_fraction) * period)
        t = np.linspace(start, start + period, 2001, endpoint=False)
        d = model.displacement_at(t)
        peak_time = t[np.argmax(d)] - start
        assert peak_time == pytest.approx(CONFIG.inspiration_share * active, abs=period / 1000)
        assert d.max() == pytest.approx(CONFIG.respiration_amplitude_mm, rel=4 * CONFIG.respiration_variability)
        assert np.all(d[t - start >= active] == 0.0), "end-expiratory pause"
        assert np.all(d[model.gated_at(t)] == 0.0), "the gate window lies within the pause"
        assert d[0] == 0.0


def test_fast_breathing_keeps_the_gate_inside_the_pause():
    model = make_model(respiration_rate_bpm=150.0, respiration_drift_bpm=0.0, gate_fraction=0.5)
    t = np.linspace(0, 20, 200001)
    assert np.all(model.displacement_at(t)[model.gated_at(t)] == 0.0)
    assert model.rate_at(t).mean() == pytest.approx(150.0, rel=0.02)


def test_rate_drifts_slowly_within_bounds_and_varies_breath_to_breath():
    model = make_model(time_scale=1.0)
    starts = model.breath_starts(0.0, 4 * 3600.0)
    rates = 60.0 / np.diff(starts)
    low, high = (f * CONFIG.respiration_rate_bpm for f in RATE_DRIFT_BOUNDS)
    jitter = CONFIG.respiration_rate_bpm * CONFIG.respiration_variability
    assert rates.min() >= low * np.exp(-5 * CONFIG.respiration_variability)
    assert rates.max() <= high * np.exp(5 * CONFIG.respiration_variability)
    assert rates.mean() == pytest.approx(CONFIG.respiration_rate_bpm, abs=3.0)
    assert rates.std() == pytest.approx(np.hypot(CONFIG.respiration_drift_bpm, jitter), rel=0.35)
    # Drift is slow (correlated over a time constant), variability is breath to breath.
    lag = 10
    correlation = np.corrcoef(rates[:-lag], rates[lag:])[0, 1]
    assert correlation > 0.6
    assert np.std(np.diff(rates)) == pytest.approx(np.sqrt(2) * jitter, rel=0.35)


def test_drift_runs_in_process_time():
    slow, fast = make_model(time_scale=1.0), make_model(time_scale=50.0)
    t_slow = slow.breath_starts(0.0, 3000.0)
    t_fast = fast.breath_starts(0.0, 60.0)
    # 60 real seconds at time_scale 50 wander as far as 3000 s at time_scale 1.
    assert np.std(60 / np.diff(t_fast)) > 0.5 * np.std(60 / np.diff(t_slow))
    assert fast.heart_rate_at(0.0) == CONFIG.heart_rate_bpm
    assert fast.temperature_at(0.0) == CONFIG.body_temperature_c
    assert fast.heart_rate_at(60.0) != CONFIG.heart_rate_bpm
    assert fast.temperature_at(60.0) != slow.temperature_at(60.0)


def test_vectorised_functions_keep_the_shape_of_their_input():
    model = make_model()
    t = np.linspace(0, 5, 12).reshape(3, 4)
    for fn in (model.phase_at, model.displacement_at, model.gated_at, model.rate_at, model.heart_rate_at):
        assert fn(t).shape == (3, 4)
    assert model.gated_at(t).dtype == bool


def test_alarm_names_the_vital_its_value_and_the_limit():
    model = make_model()
    vitals = {"rate": 80.0, "heart_rate": 450.0, "temperature": 36.8}
    assert model.alarms(vitals) == []
    model.set_limits("temperature", 37.0, 39.5)
    assert model.alarms(vitals) == ["body temperature 36.8 C at or below the low limit 37 C"]
    model.set_limits("rate", 30.0, 80.0)  # at the limit counts, as EPICS HIHI does
    assert "respiration rate 80.0 bpm at or above the high limit 80 bpm" in model.alarms(vitals)
    with pytest.raises(LimitRefused, match=r"low limit \(500 bpm\) must be below the high limit \(400 bpm\)"):
        model.set_limits("heart_rate", 500.0, 400.0)
    assert model.limits["heart_rate"] == (ALARMS.heart_rate_alarm_low_bpm, ALARMS.heart_rate_alarm_high_bpm)
