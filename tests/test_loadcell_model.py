"""Loading-frame physics on a hand-driven clock: exact stiffness, yield, failure, relaxation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from nanoscope_daq.config import SpecimenConfig, load_config
from nanoscope_daq.sim.clock import SimClock
from nanoscope_daq.sim.models.loadcell import (
    ControlMode,
    FrameAlarm,
    LoadFrameModel,
    LoadFrameRefused,
    LoadingMode,
    SpecimenCondition,
)

K = 150.0  # default stiffness, N/mm
YIELD = 18.0
ALPHA = 0.2
FAILURE = 24.0


class HandClock(SimClock):
    """A SimClock whose time only moves when the test says so (time_scale 1)."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.t = 0.0

    def now(self) -> float:
        return self.t


SPECIMEN_KEYS = {f.name for f in dataclasses.fields(SpecimenConfig)}


def frame(seed: int = 0, **keys) -> tuple[LoadFrameModel, HandClock]:
    """A load frame with ``keys`` overriding the [loadcell] or [sim.specimen] key of that name."""
    clock = HandClock()
    specimen = {key: value for key, value in keys.items() if key in SPECIMEN_KEYS}
    cell = {key: value for key, value in keys.items() if key not in SPECIMEN_KEYS}
    config = load_config(loadcell=cell, sim={"specimen": specimen})
    return LoadFrameModel(config.loadcell, config.sim.specimen, clock, seed=seed), clock


def run_until(model: LoadFrameModel, clock: HandClock, predicate, *, step: float = 0.1, limit: float = 600.0):
    """Advance the clock in ``step`` until ``predicate(state)``; the state then."""
    while clock.t < limit:
        clock.t += step
        state = model.update()
        if predicate(state):
            return state
    raise AssertionError(f"condition not reached within {limit} s; last state {model.update()}")


def move_to_extension(model: LoadFrameModel, clock: HandClock, target_mm: float):
    model.set_control(ControlMode.EXTENSION)
    model.start(ControlMode.EXTENSION, target_mm)
    return run_until(model, clock, lambda s: s.done)


def test_elastic_ramp_and_hold_follow_the_prony_closed_form():
    g, tau = 0.08, 20.0
    model, clock = frame(speed_default_mm_per_min=3.0, relaxation_fraction=g, relaxation_time_s=tau)
    model.set_mode(LoadingMode.TENSION)
    model.start(ControlMode.EXTENSION, 0.05)  # 0.05 mm at 0.05 mm/s: a 1 s ramp
    ramp_s, rate = 1.0, K * 0.05  # elastic force rate, N/s
    relaxing_end = rate * tau * (1 - math.exp(-ramp_s / tau))
    clock.t = ramp_s
    state = model.update()
    assert not state.moving and state.extension_mm == pytest.approx(0.05, abs=1e-12)
    assert state.force_n == pytest.approx((1 - g) * rate * ramp_s + g * relaxing_end, abs=1e-9)
    assert state.specimen is SpecimenCondition.INTACT
    for hold in (5.0, 30.0, 200.0):
        clock.t = ramp_s + hold
        expected = (1 - g) * K * 0.05 + g * relaxing_end * math.exp(-hold / tau)
        assert model.update().force_n == pytest.approx(expected, abs=1e-9)
    assert model.update().force_n == pytest.approx((1 - g) * K * 0.05, rel=1e-3)  # fully relaxed


def test_yield_hardening_and_elastic_unloading_are_exact():
    model, clock = frame(relaxation_fraction=0.0, speed_default_mm_per_min=3.0)
    state = move_to_extension(model, clock, 0.1)
    assert state.force_n == pytest.approx(K * 0.1, abs=1e-9)
    assert state.specimen is SpecimenCondition.INTACT
    state = move_to_extension(model, clock, 0.2)
    yield_mm = YIELD / K
    assert state.force_n == pytest.approx(YIELD + ALPHA * K * (0.2 - yield_mm), abs=1e-9)  # 20.4 N
    assert state.specimen is SpecimenCondition.YIELDED
    permanent_set = 0.2 - state.force_n / K
    state = move_to_extension(model, clock, 0.1)  # unloading is elastic
    assert state.force_n == pytest.approx(K * (0.1 - permanent_set), abs=1e-9)  # 5.4 N
    assert state.force_n == pytest.approx(5.4, abs=1e-9)


def test_failure_drops_the_force_to_zero_and_latches_until_a_new_specimen():
    model, clock = frame(relaxation_fraction=0.0)
    model.set_control(ControlMode.EXTENSION)
    model.start(ControlMode.EXTENSION, 1.0)
    state = run_until(model, clock, lambda s: s.alarm is not FrameAlarm.NO_ALARM)
    failure_mm = YIELD / K + (FAILURE - YIELD) / (ALPHA * K)  # 0.32 mm
    step_travel = 0.5 / 60 * 0.05  # at most one integration step of travel past it
    assert state.alarm is FrameAlarm.SPECIMEN_FAILED and state.specimen is SpecimenCondition.FAILED
    assert state.force_n == 0.0 and state.done and not state.moving
    assert failure_mm <= state.extension_mm <= failure_mm + step_travel
    assert FAILURE <= state.peak_force_n <= FAILURE + ALPHA * K * step_travel
    assert state.alarm_message.startswith("specimen failed at 24.0")
    with pytest.raises(LoadFrameRefused, match="alarm is latched.*ALM_CLR"):
        model.start(ControlMode.EXTENSION, 0.0)
    model.clear_alarm()
    with pytest.raises(LoadFrameRefused, match="specimen has failed.*MOUNT"):
        model.start(ControlMode.LOAD, 5.0)
    state = move_to_extension(model, clock, 0.1)  # a broken bone carries nothing
    assert state.force_n == 0.0 and state.extension_mm == pytest.approx(0.1)
    model.mount_specimen()
    state = model.update()
    assert state.specimen is SpecimenCondition.INTACT and state.peak_force_n == 0.0
    state = move_to_extension(model, clock, 0.15)  # the new specimen is seated at 0.1 mm
    assert state.force_n == pytest.approx(K * 0.05, abs=1e-9)


def test_load_control_reaches_the_target_and_holds_it_against_relaxation():
    model, clock = frame()
    cfg = model.config
    model.start(ControlMode.LOAD, 10.0)
    reached = run_until(model, clock, lambda s: s.done)
    assert abs(reached.force_n - 10.0) <= cfg.stable_band_n
    assert reached.holding and not reached.moving
    # The force takes 10 N / (150 N/mm * 0.5 mm/min) = 8 s to build, then settles.
    assert 8.0 <= reached.time_s <= 8.0 + 5.0
    clock.t += 10 * model.specimen_config.relaxation_time_s
    held = model.update()
    assert abs(held.force_n - 10.0) <= cfg.stable_band_n and held.holding and held.done
    # Relaxed, the elastic force must be 10 N / (1 - g): the crosshead crept to keep the load.
    relaxed_mm = 10.0 / ((1 - model.specimen_config.relaxation_fraction) * K)
    assert held.extension_mm == pytest.approx(relaxed_mm, abs=cfg.stable_band_n / K)
    assert held.extension_mm - reached.extension_mm > 0.5 * model.specimen_config.relaxation_fraction * 10.0 / K
    model.stop()
    assert not model.update().holding


def test_dmov_waits_for_the_force_to_stop_relaxing_at_a_held_extension():
    model, clock = frame(relaxation_fraction=0.5, relaxation_time_s=5.0, speed_default_mm_per_min=3.0)
    model.set_control(ControlMode.EXTENSION)
    model.start(ControlMode.EXTENSION, 0.08)
    arrived = run_until(model, clock, lambda s: not s.moving, step=0.01)
    assert not arrived.done
    done = run_until(model, clock, lambda s: s.done, step=0.01)
    band, settle = model.config.stable_band_n, model.config.stable_time_s
    assert done.time_s - arrived.time_s > 5.0  # relaxation kept the force moving
    assert abs(model.specimen.relaxation_rate()) * settle <= band


def test_a_zero_length_move_still_drops_done_for_the_settle_time():
    model, clock = frame()
    model.set_control(ControlMode.EXTENSION)
    model.start(ControlMode.EXTENSION, 0.0)
    assert not model.update().done
    clock.t = 0.9 * model.config.stable_time_s
    assert not model.update().done
    clock.t = model.config.stable_time_s + 0.06
    assert model.update().done


def test_force_limit_stops_the_motor_and_latches_the_alarm():
    model, clock = frame(force_limit_default_n=5.0)
    model.set_control(ControlMode.EXTENSION)
    model.start(ControlMode.EXTENSION, 0.1)
    state = run_until(model, clock, lambda s: s.alarm is not FrameAlarm.NO_ALARM)
    assert state.alarm is FrameAlarm.FORCE_LIMIT and state.done and not state.moving
    assert 5.0 < state.force_n < 5.0 + K * 0.5 / 60 * 0.05 + 1e-9
    assert "force limit tripped" in state.alarm_message and "5 N" in state.alarm_message
    clock.t += 30
    assert model.update().extension_mm == state.extension_mm  # the motor stays stopped
    with pytest.raises(LoadFrameRefused, match="force limit alarm is latched"):
        model.start(ControlMode.EXTENSION, 0.0)
    model.clear_alarm()
    state = move_to_extension(model, clock, 0.0)  # unloading is allowed
    assert state.alarm is FrameAlarm.NO_ALARM and state.force_n == pytest.approx(0.0, abs=0.5)


def test_bad_set_points_are_refused_with_value_and_range():
    model, _ = frame()
    with pytest.raises(LoadFrameRefused, match=r"load target 50 N is beyond the force limit: allowed -40 \.\. 40 N"):
        model.start(ControlMode.LOAD, 50.0)
    with pytest.raises(LoadFrameRefused, match=r"force limit 600 N .*capacity 500 N"):
        model.set_force_limit(600.0)
    with pytest.raises(LoadFrameRefused, match=r"force limit 0 N"):
        model.set_force_limit(0.0)
    with pytest.raises(LoadFrameRefused, match=r"speed 5 mm/min is outside the allowed range 0\.01 \.\. 3 mm/min"):
        model.set_speed(5.0)
    with pytest.raises(LoadFrameRefused, match=r"extension target 6 mm is outside the travel range -5 \.\. 5 mm"):
        model.start(ControlMode.EXTENSION, 6.0)
    state = model.update()
    assert state.done and not state.moving and model.speed_mm_per_min == 0.5 and model.force_limit_n == 40.0


def test_loading_mode_sets_the_sign_convention():
    model, clock = frame(relaxation_fraction=0.0, extension_min_mm=-2.0)
    assert model.extension_range() == (-5.0, 2.0)  # compression: jaws closing is positive
    state = move_to_extension(model, clock, 0.1)
    assert state.mode is LoadingMode.COMPRESSION
    assert state.extension_mm == pytest.approx(0.1) and state.force_n == pytest.approx(15.0)
    assert state.specimen_displacement_mm == pytest.approx(-0.1)  # physically shortened
    model.set_mode(LoadingMode.TENSION)
    state = model.update()
    assert state.extension_mm == pytest.approx(-0.1) and state.force_n == pytest.approx(-15.0)
    assert model.extension_range() == (-2.0, 5.0)
    model.start(ControlMode.LOAD, 0.0)
    with pytest.raises(LoadFrameRefused, match="loading mode cannot change"):
        model.set_mode(LoadingMode.COMPRESSION)


def test_extension_control_travels_at_the_set_speed():
    model, clock = frame()
    model.set_speed(1.0)
    model.set_control(ControlMode.EXTENSION)
    model.start(ControlMode.EXTENSION, 0.25)  # 15 s at 1 mm/min
    clock.t = 14.9
    state = model.update()
    assert state.moving and state.extension_mm == pytest.approx(14.9 / 60.0, abs=1e-12)
    clock.t = 15.01
    state = model.update()
    assert not state.moving and state.extension_mm == pytest.approx(0.25, abs=1e-12)


def test_end_of_travel_stops_a_load_move_with_an_alarm():
    model, clock = frame(stiffness_n_per_mm=50.0, extension_max_mm=0.2, speed_default_mm_per_min=3.0)
    model.set_mode(LoadingMode.TENSION)
    model.start(ControlMode.LOAD, 15.0)  # needs 0.3 mm, the stage has 0.2
    state = run_until(model, clock, lambda s: s.alarm is not FrameAlarm.NO_ALARM)
    assert state.alarm is FrameAlarm.TRAVEL_LIMIT and state.extension_mm == 0.2 and not state.holding
    assert "travel limit" in state.alarm_message


def test_noise_is_gaussian_with_the_configured_sigma_and_seeded():
    model, _ = frame(seed=7)
    sigma = model.specimen_config.force_noise_n
    readings = np.array([model.measure_force() for _ in range(5)])
    np.testing.assert_allclose(readings, sigma * np.random.default_rng(7).standard_normal(5), rtol=0, atol=1e-15)
    other, _ = frame(seed=8)
    assert other.measure_force() != readings[0]
    many = np.array([model.measure_force() for _ in range(4000)])
    assert many.std() == pytest.approx(sigma, rel=0.05) and abs(many.mean()) < 4 * sigma / math.sqrt(4000)


def test_state_and_force_at_serve_the_camera():
    model, clock = frame(relaxation_fraction=0.0)
    model.start(ControlMode.LOAD, 5.0)
    clock.t = 2.0
    assert model.force_at() == pytest.approx(model.state().force_n)
    assert model.state().force_n == pytest.approx(K * 2.0 * 0.5 / 60, abs=0.05)
    earlier = model.force_at(1.0)  # before the last update: the latest state
    assert earlier == model.state().force_n


def test_quiet_only_when_nothing_moves_and_the_force_has_settled():
    model, clock = frame()
    assert model.is_quiet(1.0)
    model.start(ControlMode.LOAD, 10.0)
    assert not model.is_quiet(1.0)
    run_until(model, clock, lambda s: s.done)
    assert not model.is_quiet(1.0)  # relaxation still pulls 0.04 N/s
    clock.t += 10 * model.specimen_config.relaxation_time_s
    model.update()
    assert model.is_quiet(1.0)
