"""ophyd device of the liquid-metal-jet X-ray source (PVs of ``<P>SRC:``, docs/pv-reference.md)."""

from __future__ import annotations

import math
import numbers

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import StatusBase

from .signals import CommandRefused, ConfirmedSignal, condition_status, confirmed_put, in_order, then

READY_STATES = ("Ready", "On")


class SourceNotReady(CommandRefused):
    """X-ray output was asked for while the source is off, warming up or tripped."""


class SourceShutter(Device):
    """The beam shutter: ``set("open")`` / ``set("close")`` finishes when SHUTTER_RBV gets there."""

    command = Cpt(ConfirmedSignal, "SHUTTER", string=True, auto_monitor=True, kind="omitted")
    status = Cpt(EpicsSignalRO, "SHUTTER_RBV", string=True, auto_monitor=True, kind="normal")
    message = Cpt(EpicsSignalRO, "MSG", string=True, auto_monitor=True, kind="omitted")

    #: user word -> (command value, position reached)
    TARGETS = {"open": ("Open", "Open"), "close": ("Close", "Closed")}

    def set(self, value: str, *, timeout: float = 5.0) -> StatusBase:
        """Command ``"open"`` or ``"close"``; the Status finishes when SHUTTER_RBV gets there."""
        key = str(value).strip().lower()
        if key not in self.TARGETS:
            raise ValueError(f"{self.name}: shutter position must be 'open' or 'close', not {value!r}")
        command, target = self.TARGETS[key]
        command_seen = False  # the monitored command may still show the previous one

        def interrupted() -> str | None:
            nonlocal command_seen
            current = self.command.get()
            if current == command:
                command_seen = True
            elif command_seen:
                return f"the shutter was commanded {current} before reaching {target}: {self.message.get()}"
            return None

        return then(
            confirmed_put(self.command, command, self.message),
            lambda: condition_status(
                self, [self.status, self.command], lambda: self.status.get() == target, interrupted, timeout
            ),
        )


class XraySource(Device):
    """Microfocus X-ray source: warm-up, high voltage and power, spot, shutter and interlock.

    ``set((kv, watts))`` (:meth:`switch_on`: reset a cleared trip, warm up, ramp) or,
    step by step, ``warm_up()`` then ``set_output(kv, watts)``; ``shutter.set("open")``
    and :meth:`switch_off`. Each returns a Status at once; a request the source cannot
    honour raises at once, or fails its Status, with the reason. ``kv.set(...)``, ``spot.set(...)`` and the
    other set points only change the set point (refusals raise too); ``set_output``
    is what waits for the readbacks to arrive.
    """

    kv = Cpt(ConfirmedSignal, "KV_RBV", write_pv="KV", auto_monitor=True, kind="hinted")
    power = Cpt(ConfirmedSignal, "POWER_RBV", write_pv="POWER", auto_monitor=True, kind="hinted")
    current = Cpt(EpicsSignalRO, "CURRENT_RBV", kind="normal")
    shutter = Cpt(SourceShutter, "", kind="normal")

    spot = Cpt(ConfirmedSignal, "SPOT_RBV", write_pv="SPOT", kind="config")
    kv_ramp = Cpt(ConfirmedSignal, "KV_RAMP", kind="config")
    power_ramp = Cpt(ConfirmedSignal, "POWER_RAMP", kind="config")
    anode = Cpt(EpicsSignalRO, "ANODE_RBV", string=True, kind="config")

    state = Cpt(EpicsSignalRO, "STATE_RBV", string=True, auto_monitor=True, kind="omitted")
    message = Cpt(EpicsSignalRO, "MSG", string=True, auto_monitor=True, kind="omitted")
    jet = Cpt(ConfirmedSignal, "JET_RBV", write_pv="JET", string=True, kind="omitted")
    warmup_progress = Cpt(EpicsSignalRO, "WARMUP_RBV", kind="omitted")
    hv = Cpt(ConfirmedSignal, "HV_RBV", write_pv="HV", string=True, auto_monitor=True, kind="omitted")
    power_limit = Cpt(EpicsSignalRO, "POWER_MAX_RBV", kind="omitted")
    xrays = Cpt(EpicsSignalRO, "XRAY_RBV", string=True, auto_monitor=True, kind="omitted")
    interlock = Cpt(EpicsSignalRO, "INTLK_RBV", string=True, auto_monitor=True, kind="omitted")
    interlock_reset = Cpt(EpicsSignal, "INTLK_RESET", string=True, kind="omitted")
    trip = Cpt(EpicsSignal, "TRIP", string=True, kind="omitted")

    #: A readback within this of its set point counts as arrived.
    kv_tolerance = 0.01
    power_tolerance = 0.01

    def _fault_reason(self) -> str | None:
        if self.state.get() == "Fault":
            return f"the interlock tripped: {self.message.get()}"
        return None

    def _state_unless_tripped(self, refused: str) -> str:
        """The present state; raises ``SourceNotReady`` ("<refused>: the interlock is tripped ...") on Fault."""
        state = self.state.get(use_monitor=False)
        if state == "Fault":
            raise SourceNotReady(
                f"{self.name}: {refused}: the interlock is tripped ({self.message.get()}); call reset_interlock() first"
            )
        return state

    def warm_up(self, timeout: float | None = None) -> StatusBase:
        """Start the jet if needed; the Status finishes at state Ready (fails on an interlock trip)."""
        state = self._state_unless_tripped("cannot warm up")
        steps = [] if state in READY_STATES else [lambda: confirmed_put(self.jet, "On", self.message)]
        steps.append(lambda: condition_status(
            self, [self.state], lambda: self.state.get() in READY_STATES, self._fault_reason, timeout
        ))
        return in_order(self, steps)

    def reset_interlock(self, timeout: float | None = 10.0) -> StatusBase:
        """Clear an interlock trip; the Status finishes when the interlock reads OK again (HV stays off)."""
        self.interlock_reset.put("Reset")
        return condition_status(
            self,
            [self.interlock, self.state],
            lambda: self.interlock.get() == "OK" and self.state.get() != "Fault",
            timeout=timeout,
        )

    def _check_numbers(self, kv: float, watts: float) -> None:
        for what, value in (("high voltage", kv), ("power", watts)):
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{self.name}: {what} must be a finite number, not {value!r}")

    def check_output(self, kv: float, watts: float) -> None:
        """Raise (without touching the source) if ``kv``/``watts`` cannot be delivered now."""
        self._check_numbers(kv, watts)
        state = self._state_unless_tripped("X-ray output refused")
        if state not in READY_STATES:
            progress = self.warmup_progress.get(use_monitor=False)
            raise SourceNotReady(
                f"{self.name}: X-ray output refused: the source is {state} (warm-up {progress:.0f}% complete); "
                "high voltage needs state Ready: run the source_on plan (nanoscope scan source_on), "
                "or call warm_up() and wait for it"
            )
        self.check_range(kv, watts)

    def check_range(self, kv: float, watts: float) -> None:
        low, high = self.kv.limits
        if not low <= kv <= high:
            raise ValueError(f"{self.name}: high voltage {kv:g} kV is outside the allowed range {low:g} to {high:g} kV")
        limit = self.power_limit.get(use_monitor=False)
        if not 0 <= watts <= limit:
            spot = self.spot.get(use_monitor=False)
            raise ValueError(
                f"{self.name}: power {watts:g} W is outside the allowed range 0 to {limit:g} W "
                f"for the {spot:g} um spot; lower the power or enlarge the spot"
            )

    def set_output(self, kv: float, watts: float, timeout: float | None = None) -> StatusBase:
        """Set kV and W and switch the high voltage on; the Status finishes when both readbacks arrive."""
        self.check_output(kv, watts)
        steps = [
            lambda: confirmed_put(self.kv, kv, self.message),
            lambda: confirmed_put(self.power, watts, self.message),
        ]
        if self.hv.get(use_monitor=False) != "On":
            steps.append(lambda: confirmed_put(self.hv, "On", self.message))

        def arrived() -> bool:
            return (
                abs(self.kv.get() - kv) <= self.kv_tolerance
                and abs(self.power.get() - watts) <= self.power_tolerance
                and self.hv.get() == "On"
            )

        steps.append(lambda: condition_status(
            self, [self.kv, self.power, self.state], arrived, self._fault_reason, timeout
        ))
        return in_order(self, steps)

    def set(self, value: tuple[float, float], *, timeout: float | None = None) -> StatusBase:
        """``set((kv, watts))`` for ``bps.mv``: :meth:`switch_on`, from whatever state the source is in."""
        kv, watts = value
        return self.switch_on(kv, watts, timeout=timeout)

    def switch_on(self, kv: float, watts: float, timeout: float | None = None) -> StatusBase:
        """Bring the source from any state to X-rays at ``kv``/``watts``: reset a cleared trip, warm up, ramp.

        The kV and power are checked against the limits first (nothing changes on a
        refusal). A tripped interlock whose cause has cleared is reset; a cause still
        present fails the Status with the IOC's reason.
        """
        self._check_numbers(kv, watts)
        self.check_range(kv, watts)
        steps = []
        if self.state.get(use_monitor=False) == "Fault":
            steps.append(lambda: self.reset_interlock())
        steps.append(lambda: self.warm_up(timeout))
        steps.append(lambda: self.set_output(kv, watts, timeout))
        return in_order(self, steps)

    def switch_off(self, timeout: float | None = 10.0) -> StatusBase:
        """Close the shutter, then switch the high voltage off; finishes when no X-rays are produced."""
        return in_order(self, [
            lambda: self.shutter.set("close"),
            lambda: confirmed_put(self.hv, "Off", self.message),
            lambda: condition_status(self, [self.xrays, self.hv], lambda: self.xrays.get() == "Off", timeout=timeout),
        ])
