"""Channel Access interface of the simulated liquid-metal-jet X-ray source (``<P>SRC:``).

Set points are refused, not clipped: a refused put fails on the client with the reason,
and the same reason is posted on ``MSG`` for clients that cannot see put errors
(pyepics ignores them). One loop publishes the readbacks while anything moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from ..models.source import ShutterPosition, SourceModel, SourceRefused, SourceState
from .pvs import PutterChecksLimits, enum_pv, fixed_length, message_pv, readback, setpoint, wait_for_wake

OFF_ON = ("Off", "On")


class SourceIOC(PVGroup):
    """Liquid-metal-jet microfocus X-ray source (Excillum MetalJet class, Ga-rich anode).

    States Off -> WarmingUp -> Ready -> On, and Fault on an interlock trip. Start the jet
    (JET=On), wait for Ready, then switch the high voltage on (HV=On): KV_RBV ramps to KV,
    then POWER_RBV to POWER. Refused puts fail with the reason, which is also posted on MSG.
    Warm-up and ramp rates are in process seconds (the simulator's time_scale speeds them up).
    """

    type_map = {**PVGroup.type_map, float: PutterChecksLimits}

    #: Longest interval between readback updates while nothing is scheduled (s).
    PUBLISH_PERIOD_S = 0.05

    anode = pvproperty(
        name="ANODE_RBV",
        value="",
        dtype=ChannelType.STRING,
        read_only=True,
        doc="Anode material of the metal jet",
        alarm_group="ANODE_RBV",
    )
    state = enum_pv(
        "STATE_RBV",
        "Operating state: Off, WarmingUp (jet start and conditioning), Ready (jet running, HV off), "
        "On (HV on), Fault (interlock tripped)",
        tuple(s.value for s in SourceState),
        read_only=True,
    )
    message = message_pv("MSG", "Last event or refusal, with its reason and the fix (e.g. why HV=On was refused)")
    jet = enum_pv("JET", "Metal jet command: On starts the jet and its warm-up, Off stops it (and the HV)", OFF_ON)
    jet_rbv = enum_pv("JET_RBV", "Metal jet running", OFF_ON, read_only=True)
    warmup = readback(
        "WARMUP_RBV", "Warm-up progress (100 % = Ready); a warm-up takes [source] warmup_s process seconds", "%", 1
    )
    hv = enum_pv("HV", "High voltage command; On is refused unless the state is Ready or On", OFF_ON)
    hv_rbv = enum_pv("HV_RBV", "High voltage on", OFF_ON, read_only=True)
    kv = setpoint(
        "KV", "Acceleration voltage set point; allowed range [source] kv_min to kv_max (its control limits)", "kV", 2
    )
    kv_rbv = readback("KV_RBV", "Acceleration voltage readback; ramps at KV_RAMP while the HV is on", "kV", 2)
    power = setpoint(
        "POWER",
        "Electron-beam power set point; allowed range 0 to POWER_MAX_RBV (its upper control limit, follows the spot)",
        "W",
        2,
    )
    power_rbv = readback(
        "POWER_RBV", "Electron-beam power readback; ramps at POWER_RAMP once KV_RBV is reached", "W", 2
    )
    power_max = readback(
        "POWER_MAX_RBV", "Largest power allowed: min([source] power_max_w, power_per_um_spot_w x spot size)", "W", 1
    )
    current = readback("CURRENT_RBV", "Emission current = POWER_RBV / KV_RBV", "mA", 4)
    spot = setpoint(
        "SPOT",
        "Focal spot size set point; range [source] spot_min_um to spot_max_um; "
        "refused if POWER exceeds the new spot's limit",
        "um",
        1,
    )
    spot_rbv = readback("SPOT_RBV", "Focal spot size readback", "um", 1)
    kv_ramp = setpoint(
        "KV_RAMP", "High-voltage ramp rate per process second; 1 % to 100 % of [source] kv_ramp_per_s", "kV/s", 2
    )
    power_ramp = setpoint(
        "POWER_RAMP", "Power ramp rate per process second; 1 % to 100 % of [source] power_ramp_w_per_s", "W/s", 2
    )
    shutter = enum_pv(
        "SHUTTER", "Beam shutter command; Open is refused while the interlock is tripped", ("Close", "Open")
    )
    shutter_rbv = enum_pv(
        "SHUTTER_RBV",
        "Beam shutter position; travel takes [source] shutter_move_s",
        tuple(p.value for p in ShutterPosition),
        read_only=True,
    )
    xray = enum_pv(
        "XRAY_RBV", "X-rays emitted (HV on and power above 0; the shutter may still be closed)", OFF_ON, read_only=True
    )
    interlock = enum_pv("INTLK_RBV", "Safety interlock status", ("OK", "Tripped"), read_only=True)
    interlock_reset = enum_pv(
        "INTLK_RESET", "Write Reset to clear a trip (back to Ready, HV off); returns to Idle", ("Idle", "Reset")
    )
    trip = enum_pv(
        "TRIP", "Fault injection for tests: write Trip to trip the interlock; returns to Idle", ("Idle", "Trip")
    )

    def __init__(self, prefix: str, model: SourceModel) -> None:
        super().__init__(prefix)
        self.model = model
        self._wake: asyncio.Event | None = None
        self._last_state: SourceState | None = None

    async def initialize(self) -> None:
        """Config-derived values, ranges and the model's initial set points."""
        model, cfg = self.model, self.model.config
        await self.anode.write(cfg.anode)
        for pv, value, low, high in (
            (self.kv, model.kv_setpoint, cfg.kv_min, cfg.kv_max),
            (self.power, model.power_setpoint_w, 0.0, model.power_limit_w()),
            (self.spot, model.spot_um, cfg.spot_min_um, cfg.spot_max_um),
        ):
            await pv.write(value, verify_value=False, lower_ctrl_limit=low, upper_ctrl_limit=high)
        for pv, value, configured in (
            (self.kv_ramp, model.kv_ramp_per_s, model.behaviour.kv_ramp_per_s),
            (self.power_ramp, model.power_ramp_w_per_s, model.behaviour.power_ramp_w_per_s),
        ):
            low, high = model.ramp_rate_range(configured)
            await pv.write(value, verify_value=False, lower_ctrl_limit=low, upper_ctrl_limit=high)
        await self.message.write(fixed_length("source off: set JET=On to start the jet and warm up"))
        await self._publish()

    async def _command(self, action: Callable[[], None], done: str) -> None:
        """Run a model command; post ``done`` or the refusal on MSG (a refusal also fails the put)."""
        try:
            action()
        except SourceRefused as exc:
            await self.message.write(fixed_length(str(exc)))
            raise
        await self.message.write(fixed_length(done))
        if self._wake is not None:
            self._wake.set()

    @jet.putter
    async def jet(self, instance, value):
        if value == "On":
            await self._command(
                self.model.start_jet,
                f"jet started: warm-up takes {self.model.behaviour.warmup_s:g} s; HV is allowed at state Ready",
            )
        else:
            await self._command(self.model.stop_jet, "jet stopped: high voltage off")

    @hv.putter
    async def hv(self, instance, value):
        on = value == "On"
        done = (
            f"high voltage on: ramping to {self.model.kv_setpoint:g} kV, then {self.model.power_setpoint_w:g} W"
            if on
            else "high voltage off"
        )
        await self._command(lambda: self.model.set_hv(on), done)

    @kv.putter
    async def kv(self, instance, value):
        await self._command(lambda: self.model.set_kv(value), f"high voltage set point {value:g} kV")

    @power.putter
    async def power(self, instance, value):
        await self._command(lambda: self.model.set_power(value), f"power set point {value:g} W")

    @spot.putter
    async def spot(self, instance, value):
        await self._command(lambda: self.model.set_spot(value), f"spot size {value:g} um")
        await self.power.write_metadata(upper_ctrl_limit=self.model.power_limit_w())

    @kv_ramp.putter
    async def kv_ramp(self, instance, value):
        await self._command(lambda: self.model.set_kv_ramp(value), f"high-voltage ramp rate {value:g} kV/s")

    @power_ramp.putter
    async def power_ramp(self, instance, value):
        await self._command(lambda: self.model.set_power_ramp(value), f"power ramp rate {value:g} W/s")

    @shutter.putter
    async def shutter(self, instance, value):
        opening = value == "Open"
        done = "shutter opening" if opening else "shutter closing"
        await self._command(lambda: self.model.command_shutter(opening), done)

    @trip.putter
    async def trip(self, instance, value):
        if value == "Trip":
            reason = "fault injected through the TRIP PV"
            await self._command(
                lambda: self.model.trip(reason),
                f"interlock tripped ({reason}): high voltage off, shutter closed; reset the interlock to continue",
            )
        return "Idle"

    @interlock_reset.putter
    async def interlock_reset(self, instance, value):
        if value == "Reset":
            await self._command(self.model.reset_interlock, "interlock reset: high voltage off")
        return "Idle"

    @state.startup
    async def state(self, instance, async_lib):
        """Publish readbacks: at least every PUBLISH_PERIOD_S, at once after a command or a model event."""
        self._wake = asyncio.Event()
        while True:
            await self._publish()
            timeout = min(self.PUBLISH_PERIOD_S, self.model.next_event_in() + 1e-3)
            await wait_for_wake(self._wake, timeout)

    async def _publish(self) -> None:
        model = self.model
        t = model.clock.process_now()
        out = model.output(t)
        state = model.state(t)
        if self._last_state is SourceState.WARMING_UP and state is SourceState.READY:
            await self.message.write(fixed_length("warm-up complete: Ready for high voltage"))
        self._last_state = state
        for pv, value in (  # the state last: when it changes, the readbacks already agree
            (self.jet_rbv, OFF_ON[model.jet_on]),
            (self.warmup, model.warmup_progress(t)),
            (self.hv_rbv, OFF_ON[model.hv_on]),
            (self.kv_rbv, out.kv),
            (self.power_rbv, out.power_w),
            (self.current, out.current_ma),
            (self.spot_rbv, out.spot_um),
            (self.power_max, model.power_limit_w()),
            (self.shutter_rbv, model.shutter_position(model.clock.to_real(t)).value),
            (self.xray, OFF_ON[out.xrays_on]),
            (self.interlock, "OK" if model.interlock_ok else "Tripped"),
            (self.state, state.value),
        ):
            if pv.value != value:
                await pv.write(value)
        # Commands follow the model when it acts alone (a trip drops HV and closes the shutter).
        for pv, value in (
            (self.jet, OFF_ON[model.jet_on]),
            (self.hv, OFF_ON[model.hv_on]),
            (self.shutter, "Open" if model.shutter_commanded_open else "Close"),
        ):
            if pv.value != value:
                await pv.write(value, verify_value=False)
