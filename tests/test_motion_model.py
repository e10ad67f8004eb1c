"""The axis motion model alone (no EPICS): exact trapezoids, retargets, stops, jogs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from nanoscope_daq.config import load_config
from nanoscope_daq.sim.clock import SimClock
from nanoscope_daq.sim.models.motion import Axis, LimitViolation


@pytest.fixture
def rot() -> Axis:
    """30 deg/s, ACCL 0.5 s (60 deg/s^2), VMAX 720, limits +-36000 (default config)."""
    return Axis(load_config().stages.rot, SimClock())


def max_velocity_step(axis: Axis, t0: float, t1: float, n: int = 20001) -> float:
    """Largest change of velocity between neighbouring samples: small for smooth motion."""
    t = np.linspace(t0, t1, n)
    return float(np.max(np.abs(np.diff([axis.velocity_at(x) for x in t]))))


def test_trapezoid_exact_positions_and_duration(rot):
    end = rot.move(90.0, t=10.0)
    # accelerate 0.5 s over 7.5 deg, cruise 75 deg at 30 deg/s (2.5 s), decelerate 0.5 s
    assert end == pytest.approx(13.5, abs=1e-12)
    assert rot.position_at(10.0) == 0.0
    assert rot.position_at(10.25) == pytest.approx(0.5 * 60 * 0.25**2, abs=1e-12)
    assert rot.position_at(10.5) == pytest.approx(7.5, abs=1e-12)
    assert rot.position_at(12.0) == pytest.approx(52.5, abs=1e-12)
    assert rot.position_at(13.25) == pytest.approx(90.0 - 0.5 * 60 * 0.25**2, abs=1e-12)
    assert rot.position_at(13.5) == 90.0
    assert rot.position_at(100.0) == 90.0
    assert rot.velocity_at(10.25) == pytest.approx(15.0)
    assert rot.velocity_at(11.0) == pytest.approx(30.0)
    assert rot.is_moving(13.4) and not rot.is_moving(13.5)
    assert rot.target == 90.0 and rot.move_done_at() == end


def test_short_move_is_triangular(rot):
    end = rot.move(-5.0, t=0.0)
    peak_time = math.sqrt(5.0 / 60.0)  # half the distance at 60 deg/s^2
    assert end == pytest.approx(2 * peak_time, abs=1e-12)
    assert rot.position_at(peak_time) == pytest.approx(-2.5, abs=1e-12)
    assert rot.velocity_at(peak_time) == pytest.approx(-60.0 * peak_time)
    assert abs(rot.velocity_at(peak_time)) < rot.velocity


def test_zero_length_move_ends_at_once(rot):
    assert rot.move(0.0, t=3.0) == 3.0
    assert not rot.is_moving(3.0)
    assert rot.position_at(3.0) == 0.0


def test_vectorised_positions_equal_scalar_ones(rot):
    rot.move(90.0, t=0.0)
    rot.move(-20.0, t=1.7)
    rot.jog(1, t=6.0)
    rot.stop(t=9.0)
    t = np.linspace(-1.0, 12.0, 2001)
    np.testing.assert_allclose(rot.positions_at(t), [rot.position_at(x) for x in t], rtol=0, atol=1e-9)


def test_retarget_mid_move_is_smooth_and_exact(rot):
    rot.move(90.0, t=0.0)
    # At t=1 the stage is at 22.5 deg, cruising at 30 deg/s. Reverse to 0: brake 0.5 s
    # (to 30 deg), then a 30 deg trapezoid back (0.5 + 0.5 + 0.5 s).
    end = rot.move(0.0, t=1.0)
    assert end == pytest.approx(3.0, abs=1e-12)
    assert rot.position_at(1.0) == pytest.approx(22.5)
    assert rot.velocity_at(1.0) == pytest.approx(30.0)
    assert rot.position_at(1.5) == pytest.approx(30.0, abs=1e-12)
    assert rot.velocity_at(1.5) == pytest.approx(0.0, abs=1e-12)
    assert rot.position_at(3.0) == 0.0
    assert max_velocity_step(rot, 0.0, 3.5) <= 60.0 * 3.5 / 20000 * 1.001


def test_retarget_further_while_cruising_keeps_going(rot):
    rot.move(30.0, t=0.0)
    end = rot.move(60.0, t=1.0)  # at 22.5 deg, 30 deg/s: cruise on, decelerate at the new end
    assert end == pytest.approx(2.5, abs=1e-12)
    assert rot.velocity_at(1.0) == pytest.approx(30.0)
    assert rot.position_at(end) == 60.0


def test_stop_decelerates_at_the_set_acceleration(rot):
    rot.move(90.0, t=0.0)
    end = rot.stop(t=2.0)  # at 52.5 deg, 30 deg/s: 0.5 s and 7.5 deg to rest
    assert end == pytest.approx(2.5)
    assert rot.position_at(2.5) == pytest.approx(60.0, abs=1e-12)
    assert rot.target == pytest.approx(60.0, abs=1e-12)
    assert not rot.is_moving(2.5)


def test_jog_turns_continuously_until_stopped():
    cfg = replace(load_config().stages.rot, low_limit=0.0, high_limit=0.0)  # (0, 0): no soft limits
    axis = Axis(cfg, SimClock())
    axis.jog_velocity = 90.0
    assert axis.jog(1, t=0.0) == math.inf
    assert axis.target == math.inf and axis.is_moving(1e6)
    assert axis.velocity_at(0.25) == pytest.approx(45.0)  # reaches 90 deg/s in ACCL = 0.5 s
    assert axis.position_at(100.5) == pytest.approx(22.5 + 90.0 * 100.0, abs=1e-9)  # many turns
    end = axis.stop(t=100.5)
    assert end == pytest.approx(101.0)
    assert axis.position_at(101.0) == pytest.approx(9045.0, abs=1e-9)


def test_jog_reversal_and_speed_change_take_at_most_accl_per_ramp():
    cfg = replace(load_config().stages.rot, low_limit=0.0, high_limit=0.0)
    axis = Axis(cfg, SimClock())
    axis.jog_velocity = 90.0
    axis.jog(1, t=0.0)
    axis.jog(-1, t=2.0)  # 90 -> -90 deg/s at 180 deg/s^2: 1 s, smooth through zero
    assert axis.velocity_at(2.5) == pytest.approx(0.0, abs=1e-9)
    assert axis.velocity_at(3.0) == pytest.approx(-90.0)
    axis.jog_velocity = 9.0
    axis.jog(-1, t=4.0)  # slowing 90 -> 9 deg/s uses 90/ACCL: 0.45 s
    assert axis.velocity_at(4.45) == pytest.approx(-9.0)
    assert max_velocity_step(axis, 0.0, 6.0) <= 180.0 * 6.0 / 20000 * 1.001


def test_jog_stops_at_the_soft_limit():
    cfg = replace(load_config().stages.sx, low_limit=-1.0, high_limit=1.0)  # 2 mm/s, ACCL 0.2
    axis = Axis(cfg, SimClock())
    end = axis.jog(1, t=0.0)
    assert end == pytest.approx(0.5 + 0.2, abs=1e-12)  # 0.2 s ramps, 0.3 s cruise over 0.6 mm
    assert axis.position_at(end) == 1.0
    assert axis.target == 1.0


def test_limits_are_enforced_in_user_coordinates(rot):
    rot.user_limits = (-10.0, 10.0)
    with pytest.raises(LimitViolation, match=r"outside the soft limits \[-10.0, 10.0\].*LLM/HLM"):
        rot.move(10.5, t=0.0)
    assert not rot.is_moving(0.0)
    rot.offset = 5.0  # dial limits stay: user limits shift with the offset
    assert rot.user_limits == (-5.0, 15.0)
    rot.direction = -1
    assert rot.user_limits == (-5.0, 15.0)
    assert rot.dial_limits == (-10.0, 10.0)
    rot.move(0.0, t=1.0)
    assert rot.dial_position_at(10.0) == pytest.approx(5.0)


def test_set_position_changes_the_offset_only_at_rest(rot):
    rot.move(10.0, t=0.0)
    with pytest.raises(RuntimeError, match="stop it first"):
        rot.set_position(0.0, t=0.1)
    rot.set_position(100.0, t=5.0)
    assert rot.offset == pytest.approx(90.0)
    assert rot.position_at(5.0) == pytest.approx(100.0)
    assert rot.dial_position_at(5.0) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("velocity", 800.0, r"velocity \(VELO\) 800.0 deg/s exceeds the max velocity \(VMAX\) 720.0"),
        ("jog_velocity", 721.0, r"jog velocity \(JVEL\) 721.0 deg/s exceeds the max velocity \(VMAX\)"),
        ("velocity", 0.0, r"must be > 0"),
        ("acceleration", 0.0, r"ACCL\) must be > 0 s"),
        ("max_velocity", 10.0, r"VMAX\) 10.0 deg/s is below the velocity in use \(30.0"),
    ],
)
def test_speed_settings_are_validated(rot, attribute, value, message):
    before = getattr(rot, attribute)
    with pytest.raises(ValueError, match=message):
        setattr(rot, attribute, value)
    assert getattr(rot, attribute) == before


def test_new_speed_applies_to_the_next_move(rot):
    rot.velocity = 60.0  # ACCL stays 0.5 s: 120 deg/s^2
    end = rot.move(60.0, t=0.0)
    assert end == pytest.approx(1.5)
    assert rot.position_at(0.5) == pytest.approx(15.0)
