"""The simulated X-ray source through real Channel Access: IOC rules, ramps, shutter, interlock.

Process time runs 50x real time here (TEST_TIME_SCALE): the 120 s warm-up takes 2.4 s.
"""

from __future__ import annotations

import time

import pytest
from conftest import TEST_TIME_SCALE, ca_write, connected, ioc_get, wait_until

from nanoscope_daq.config import load_config
from nanoscope_daq.devices.signals import CommandRefused
from nanoscope_daq.devices.source import SourceNotReady, XraySource

CONFIG = load_config().source
BEHAVIOUR = load_config().sim.source


def connected_source(sim) -> XraySource:
    return connected(XraySource(sim.prefix + "SRC:", name="source"))


def ioc_put(pvname: str, value) -> None:
    """A raw CA put with completion; raises ErrorResponseReceived when the IOC refuses it."""
    ca_write(pvname, value, notify=True, timeout=5)


def ioc_refusal(pvname: str, value) -> str:
    """The error text the IOC returns for a refused put (fails the test if it is accepted)."""
    with pytest.raises(Exception, match="ECA_PUTFAIL") as info:
        ioc_put(pvname, value)
    return bytes(info.value.args[0].error_message).rstrip(b"\0").decode()


@pytest.fixture(scope="module")
def warm_source(sim):
    """The module simulator's source, warmed up (non-destructive tests share it)."""
    source = connected_source(sim)
    source.warm_up(timeout=30).wait()
    return source


def test_high_voltage_refused_until_warm_up_completes(fresh_sim):
    source = connected_source(fresh_sim)
    pv = fresh_sim.prefix + "SRC:"
    assert source.state.get() == "Off"

    with pytest.raises(SourceNotReady, match="source is Off.*warm_up"):
        source.set_output(40, 5)
    assert "start the jet" in ioc_refusal(pv + "HV", "On")
    assert "start the jet" in source.message.get(use_monitor=False)

    source.jet.set("On").wait(5)
    time.sleep(0.3)
    assert source.state.get(use_monitor=False) == "WarmingUp"
    with pytest.raises(SourceNotReady, match="WarmingUp"):
        source.set_output(40, 5)
    refusal = ioc_refusal(pv + "HV", "On")
    assert "warm-up is" in refusal and "wait for state Ready" in refusal
    assert source.message.get(use_monitor=False) == refusal.split("SourceRefused ", 1)[1]
    assert source.hv.get(use_monitor=False) == "Off"
    assert ioc_get(pv + "KV_RBV") == 0.0


def test_warm_up_takes_the_configured_process_time(fresh_sim):
    source = connected_source(fresh_sim)
    progress: list[float] = []
    source.warmup_progress.subscribe(lambda value, **kw: progress.append(value), run=False)

    start = time.monotonic()
    status = source.warm_up(timeout=30)
    status.wait()
    elapsed = time.monotonic() - start

    expected = BEHAVIOUR.warmup_s / TEST_TIME_SCALE
    assert expected * 0.9 <= elapsed <= expected + 3.0
    assert source.state.get() == "Ready"
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert any(10 < p < 90 for p in progress)
    assert "warm-up complete" in source.message.get(use_monitor=False)
    assert source.warm_up().done  # already warm: finished at once


def test_ramp_to_60_kv_10_w_at_the_set_ramp_rates(warm_source):
    source = warm_source
    source.kv_ramp.set(2.0).wait(5)  # kV per process second
    source.power_ramp.set(0.5).wait(5)  # W per process second
    kv_seen: list[float] = []
    token = source.kv.subscribe(lambda value, **kw: kv_seen.append(value), run=False)
    try:
        start = time.monotonic()
        source.set_output(60, 10, timeout=30).wait()
        elapsed = time.monotonic() - start
    finally:
        source.kv.unsubscribe(token)

    # kV first (60 kV at 2 kV/s), then power (10 W at 0.5 W/s): 50 process seconds.
    expected = (60 / 2.0 + 10 / 0.5) / TEST_TIME_SCALE
    assert expected * 0.9 <= elapsed <= expected + 2.0
    assert any(5 < kv < 55 for kv in kv_seen), "the kV readback should pass through intermediate values"
    assert source.kv.get() == pytest.approx(60, abs=source.kv_tolerance)
    assert source.power.get() == pytest.approx(10, abs=source.power_tolerance)
    assert source.current.get(use_monitor=False) == pytest.approx(10 / 60, rel=1e-3)  # W / kV = mA
    assert source.state.get() == "On" and source.xrays.get(use_monitor=False) == "On"
    reading = source.read()
    assert {"source_kv", "source_power", "source_current", "source_shutter_status"} <= reading.keys()
    assert {"source_spot", "source_kv_ramp", "source_power_ramp"} <= source.read_configuration().keys()


def test_shutter_opens_and_closes_through_moving(warm_source):
    shutter = warm_source.shutter
    positions: list[str] = []
    token = shutter.status.subscribe(lambda value, **kw: positions.append(value), run=False)
    try:
        start = time.monotonic()
        shutter.set("open").wait(5)
        opening_s = time.monotonic() - start
        assert shutter.status.get() == "Open"
        shutter.set("close").wait(5)
    finally:
        shutter.status.unsubscribe(token)
    assert positions[-4:] == ["Moving", "Open", "Moving", "Closed"]  # after the initial value
    assert BEHAVIOUR.shutter_move_s * 0.8 <= opening_s <= BEHAVIOUR.shutter_move_s + 1.0
    with pytest.raises(ValueError, match="'open' or 'close'"):
        shutter.set("ajar")


def test_interlock_trip_mid_ramp_drops_hv_closes_shutter_and_resets_to_ready(fresh_sim):
    source = connected_source(fresh_sim)
    pv = fresh_sim.prefix + "SRC:"
    source.warm_up(timeout=30).wait()
    source.shutter.set("open").wait(5)
    source.kv_ramp.set(1.0).wait(5)
    ramp = source.set_output(60, 10, timeout=30)
    time.sleep(0.3)
    assert not ramp.done and 0 < source.kv.get() < 60

    source.trip.put("Trip")
    with pytest.raises(CommandRefused, match="interlock tripped.*TRIP"):
        ramp.wait(5)
    wait_until(lambda: source.shutter.status.get() == "Closed")
    assert source.state.get(use_monitor=False) == "Fault"
    assert source.interlock.get(use_monitor=False) == "Tripped"
    assert source.hv.get(use_monitor=False) == "Off"
    assert source.kv.get(use_monitor=False) == 0.0 and source.power.get(use_monitor=False) == 0.0
    assert source.shutter.status.get(use_monitor=False) == "Closed"
    assert "TRIP" in source.message.get(use_monitor=False)
    assert ioc_get(pv + "HV") == "Off" and ioc_get(pv + "SHUTTER") == "Close"  # commands follow the trip

    with pytest.raises(SourceNotReady, match="interlock is tripped"):
        source.set_output(60, 10)
    with pytest.raises(CommandRefused, match="shutter open refused"):
        source.shutter.set("open").wait(5)
    assert "interlock is tripped" in ioc_refusal(pv + "HV", "On")

    source.reset_interlock().wait(5)
    assert source.state.get(use_monitor=False) == "Ready"
    source.kv_ramp.set(BEHAVIOUR.kv_ramp_per_s).wait(5)
    source.set_output(30, 5, timeout=30).wait()
    assert source.kv.get() == pytest.approx(30, abs=0.01)


@pytest.mark.parametrize(
    "pv, value, words",
    [
        ("KV", 80.0, ["80 kV", "20 to 70 kV"]),
        ("KV", 5.0, ["5 kV", "20 to 70 kV"]),
        ("SPOT", -5.0, ["-5 um", "5 to 40 um"]),
        ("KV_RAMP", 100.0, ["100 kV/s", "0.1 to 10 kV/s"]),
        ("POWER", -1.0, ["-1 W", "0 to 250 W"]),
    ],
)
def test_out_of_range_set_points_are_refused_by_the_ioc(warm_source, sim, pv, value, words):
    before = ioc_get(sim.prefix + "SRC:" + pv)
    refusal = ioc_refusal(sim.prefix + "SRC:" + pv, value)
    for word in words:
        assert word in refusal
    assert ioc_get(sim.prefix + "SRC:" + pv) == before
    assert ioc_get(sim.prefix + "SRC:MSG") in refusal


def test_power_above_the_spot_limit_is_refused(warm_source, sim):
    source = warm_source
    source.power.set(0.0).wait(5)
    source.spot.set(5.0).wait(5)
    assert source.power_limit.get(use_monitor=False) == pytest.approx(5.0 * CONFIG.power_per_um_spot_w)

    refusal = ioc_refusal(sim.prefix + "SRC:POWER", 200.0)
    assert "200 W" in refusal and "0 to 125 W for a 5 um spot" in refusal
    with pytest.raises(ValueError, match=r"power 200 W is outside the allowed range 0 to 125 W for the 5 um spot"):
        source.set_output(40, 200)
    with pytest.raises(CommandRefused, match="200 W refused"):
        source.power.set(200.0).wait(5)

    with pytest.raises(CommandRefused, match="spot size 3 um refused: the allowed range is 5 to 40 um"):
        source.spot.set(3.0).wait(5)
    source.spot.set(10.0).wait(5)
    source.power.set(200.0).wait(5)
    too_small = "spot size 6 um refused: it allows at most 150 W but the power set point is 200 W; lower the power"
    with pytest.raises(CommandRefused, match=too_small):
        source.spot.set(6.0).wait(5)
    assert source.spot.get(use_monitor=False) == 10.0
    source.power.set(10.0).wait(5)


def test_device_refuses_bad_output_before_touching_the_source(warm_source):
    source = warm_source
    kv_before = source.kv.get_setpoint(use_monitor=False)
    with pytest.raises(ValueError, match="high voltage 80 kV is outside the allowed range 20 to 70 kV"):
        source.set_output(80, 5)
    with pytest.raises(ValueError, match="power -3 W is outside the allowed range 0 to 250 W"):
        source.set_output(40, -3)
    with pytest.raises(ValueError, match="finite number"):
        source.set_output(float("nan"), 5)
    assert source.kv.get_setpoint(use_monitor=False) == kv_before
