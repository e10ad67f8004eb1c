"""ophyd device of the physiology monitor (PVs of ``<P>PHYS:``, docs/pv-reference.md)."""

from __future__ import annotations

import math
import numbers

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignalRO
from ophyd.status import DeviceStatus, StatusBase

from .signals import ConfirmedSignal, condition_status, confirmed_put, in_order

#: vital name -> (low-limit component, high-limit component, unit)
LIMIT_COMPONENTS = {
    "rate": ("rate_low", "rate_high", "bpm"),
    "heart_rate": ("heart_rate_low", "heart_rate_high", "bpm"),
    "temperature": ("temperature_low", "temperature_high", "C"),
}


class PhysiologyMonitor(Device):
    """Respiration, respiratory gate, heart rate, temperature and their alarm limits.

    ``wait_for_gate()`` returns a Status finished at the next gate opening (the start of
    end-expiration); ``set_alarm_limits(vital, low, high)`` changes a vital's limits.
    """

    rate = Cpt(EpicsSignalRO, "RATE", kind="hinted")
    phase = Cpt(EpicsSignalRO, "PHASE", kind="normal")  # changes at 50 Hz: read on demand
    gate = Cpt(EpicsSignalRO, "GATE", auto_monitor=True, kind="normal")
    heart_rate = Cpt(EpicsSignalRO, "HR", kind="normal")
    temperature = Cpt(EpicsSignalRO, "TEMP", kind="normal")

    rate_low = Cpt(ConfirmedSignal, "RATE_LO", kind="config")
    rate_high = Cpt(ConfirmedSignal, "RATE_HI", kind="config")
    heart_rate_low = Cpt(ConfirmedSignal, "HR_LO", kind="config")
    heart_rate_high = Cpt(ConfirmedSignal, "HR_HI", kind="config")
    temperature_low = Cpt(ConfirmedSignal, "TEMP_LO", kind="config")
    temperature_high = Cpt(ConfirmedSignal, "TEMP_HI", kind="config")
    gate_fraction = Cpt(EpicsSignalRO, "GATE_FRAC_RBV", kind="config")

    displacement = Cpt(EpicsSignalRO, "RESP", kind="omitted")
    alarm = Cpt(EpicsSignalRO, "ALARM", kind="omitted")  # 0 OK, 1 ALARM: ready for bluesky's SuspendBoolHigh
    alarm_message = Cpt(EpicsSignalRO, "ALARM_MSG", string=True, kind="omitted")
    message = Cpt(EpicsSignalRO, "MSG", string=True, kind="omitted")
    history = Cpt(EpicsSignalRO, "RESP_HIST", kind="omitted")
    history_step = Cpt(EpicsSignalRO, "RESP_HIST_DT", kind="omitted")

    def wait_for_gate(self, timeout: float | None = None) -> DeviceStatus:
        """A Status finished at the next Closed -> Open edge of the gate (not by a gate already open)."""
        seen_closed = False

        def opened() -> bool:
            nonlocal seen_closed
            is_open = self.gate.get() == 1
            if not is_open:
                seen_closed = True
            return is_open and seen_closed

        return condition_status(self, [self.gate], opened, timeout=timeout)

    def set_alarm_limits(self, vital: str, low: float, high: float) -> StatusBase:
        """Set both alarm limits of ``vital`` ('rate', 'heart_rate' or 'temperature').

        Bad arguments raise at once; the Status fails with the IOC's reason if it refuses a limit.
        """
        if vital not in LIMIT_COMPONENTS:
            raise ValueError(f"{self.name}: unknown vital {vital!r}; choose one of {', '.join(LIMIT_COMPONENTS)}")
        low_name, high_name, unit = LIMIT_COMPONENTS[vital]
        for value in (low, high):
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{self.name}: {vital} alarm limits must be finite numbers, not {value!r}")
        if not low < high:
            raise ValueError(
                f"{self.name}: {vital} low alarm limit {low:g} {unit} must be below the high limit {high:g} {unit}"
            )
        low_signal, high_signal = getattr(self, low_name), getattr(self, high_name)
        # Order the puts so that the IOC never sees low >= high in between.
        if low >= high_signal.get(use_monitor=False):
            order = ((high_signal, high), (low_signal, low))
        else:
            order = ((low_signal, low), (high_signal, high))
        return in_order(self, [
            lambda s=signal, v=value: confirmed_put(s, v, self.message) for signal, value in order
        ])
