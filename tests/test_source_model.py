"""The X-ray source model alone, on a hand-driven clock: state machine, ramps, limits, trip."""

from __future__ import annotations

import math

import pytest

from nanoscope_daq.config import load_config
from nanoscope_daq.sim.clock import SimClock
from nanoscope_daq.sim.models.source import ShutterPosition, SourceModel, SourceRefused, SourceState

CONFIG = load_config().source
BEHAVIOUR = load_config().sim.source


class HandClock(SimClock):
    """A SimClock whose real time only moves when the test says so."""

    def __init__(self, time_scale: float = 1.0) -> None:
        super().__init__(time_scale)
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def advance_process(self, seconds: float) -> None:
        self.t += self.to_real(seconds)


@pytest.fixture
def clock() -> HandClock:
    return HandClock(time_scale=50.0)


@pytest.fixture
def source(clock) -> SourceModel:
    return SourceModel(CONFIG, BEHAVIOUR, clock)


def warm(source: SourceModel, clock: HandClock) -> None:
    source.start_jet()
    clock.advance_process(BEHAVIOUR.warmup_s)


def test_warm_up_takes_warmup_s_of_process_time(source, clock):
    assert source.state() is SourceState.OFF
    source.start_jet()
    clock.advance_process(BEHAVIOUR.warmup_s / 2)
    assert source.state() is SourceState.WARMING_UP
    assert source.warmup_progress() == pytest.approx(50.0)
    with pytest.raises(SourceRefused, match=r"warm-up is 50% complete \(60 s of 120 s remain\)"):
        source.set_hv(True)
    clock.advance_process(BEHAVIOUR.warmup_s / 2)
    assert source.state() is SourceState.READY
    assert clock.now() == pytest.approx(BEHAVIOUR.warmup_s / 50.0)


def test_hv_ramps_kv_first_then_power(source, clock):
    warm(source, clock)
    source.set_kv(60.0)
    source.set_power(10.0)
    source.set_hv(True)
    kv_time = 60.0 / BEHAVIOUR.kv_ramp_per_s
    clock.advance_process(kv_time / 2)
    out = source.output()
    assert (out.kv, out.power_w, out.current_ma, out.xrays_on) == (pytest.approx(30.0), 0.0, 0.0, False)
    clock.advance_process(kv_time / 2 + 0.1)
    out = source.output()
    assert out.kv == 60.0 and out.power_w == pytest.approx(0.1 * BEHAVIOUR.power_ramp_w_per_s)
    clock.advance_process(10.0)
    out = source.output()
    assert (out.kv, out.power_w, out.xrays_on, out.beam_on) == (60.0, 10.0, True, False)
    assert out.current_ma == pytest.approx(10.0 / 60.0)  # W / kV = mA
    assert source.state() is SourceState.ON
    # A new set point ramps from where the readback is.
    source.set_kv(40.0)
    clock.advance_process(1.0)
    assert source.output().kv == pytest.approx(60.0 - BEHAVIOUR.kv_ramp_per_s)
    assert source.output(clock.to_process(clock.now()) + 10).kv == 40.0


def test_power_limit_scales_with_spot_and_is_capped(source):
    assert source.power_limit_w(5.0) == 5.0 * CONFIG.power_per_um_spot_w
    assert source.power_limit_w(40.0) == CONFIG.power_max_w
    source.set_spot(5.0)
    with pytest.raises(SourceRefused, match="power 200 W refused: the allowed range is 0 to 125 W for a 5 um spot"):
        source.set_power(200.0)
    source.set_power(125.0)
    source.set_spot(8.0)
    source.set_power(150.0)
    with pytest.raises(SourceRefused, match="spot size 5 um refused: it allows at most 125 W but the power set point"):
        source.set_spot(5.0)
    assert source.spot_um == 8.0


@pytest.mark.parametrize(
    "command, value, message",
    [
        ("set_kv", 80.0, "high voltage 80 kV refused: the allowed range is 20 to 70 kV"),
        ("set_kv", 19.9, "high voltage 19.9 kV refused: the allowed range is 20 to 70 kV"),
        ("set_spot", -5.0, "spot size -5 um refused: the allowed range is 5 to 40 um"),
        ("set_power", -1.0, "power -1 W refused: the allowed range is 0 to 250 W"),
        ("set_kv_ramp", 0.0, "high-voltage ramp rate 0 kV/s refused: the allowed range is 0.1 to 10 kV/s"),
    ],
)
def test_out_of_range_set_points_name_value_and_range(source, command, value, message):
    with pytest.raises(SourceRefused, match=message.replace("(", r"\(")):
        getattr(source, command)(value)


def test_trip_drops_hv_closes_shutter_and_reset_returns_to_ready(source, clock):
    warm(source, clock)
    source.set_kv(50.0)
    source.set_hv(True)
    source.command_shutter(True)
    clock.t += BEHAVIOUR.shutter_move_s / 2
    assert source.shutter_position() is ShutterPosition.MOVING
    clock.t += BEHAVIOUR.shutter_move_s
    assert source.shutter_position() is ShutterPosition.OPEN
    source.trip("test trip")
    out = source.output()
    assert (out.kv, out.power_w, out.xrays_on) == (0.0, 0.0, False)
    assert source.state() is SourceState.FAULT and not source.hv_on
    assert source.shutter_position() is ShutterPosition.MOVING
    clock.t += BEHAVIOUR.shutter_move_s * 1.01
    assert source.shutter_position() is ShutterPosition.CLOSED
    with pytest.raises(SourceRefused, match=r"interlock is tripped \(test trip\)"):
        source.set_hv(True)
    with pytest.raises(SourceRefused, match="shutter open refused"):
        source.command_shutter(True)
    source.reset_interlock()
    assert source.state() is SourceState.READY


def test_next_event_is_the_nearest_ramp_end_warm_up_end_or_shutter_arrival(source, clock):
    assert source.next_event_in() == math.inf
    source.start_jet()
    assert source.next_event_in() == pytest.approx(BEHAVIOUR.warmup_s / 50.0)
    source.command_shutter(True)
    assert source.next_event_in() == pytest.approx(BEHAVIOUR.shutter_move_s)
