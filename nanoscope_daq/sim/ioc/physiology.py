"""Channel Access interface of the simulated physiology monitor (``<P>PHYS:``).

One loop serves everything: the respiration waveform, phase and gate at
``waveform_rate_hz`` (and exactly at each gate edge, so GATE transitions are not
quantised to the sample period), the slow vitals and the alarm twice a second, and
the waveform history for displays at the same slow rate.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from ...config import ConfigError
from ..models.physiology import VITALS, LimitRefused, PhysiologyModel
from .pvs import enum_pv, fixed_length, message_pv, readback, setpoint

GATE_STATES = ("Closed", "Open")
#: Most samples RESP_HIST can hold (history_s * waveform_rate_hz must not exceed it).
HISTORY_MAX_POINTS = 2048


class PhysiologyIOC(PVGroup):
    """Physiology monitor of the anaesthetised mouse: respiration, gating signal, heart rate, temperature.

    GATE is Open during end-expiration (the last gate_fraction of each breath), when the
    chest is still. ALARM goes to ALARM when a vital is at or beyond one of its limits
    (the *_LO / *_HI PVs, also served as the vital PV's LOLO/HIHI alarm limits);
    ALARM_MSG names the vital. A refused limit fails the put and is explained on MSG.
    """

    #: Period of the slow updates: vitals, alarm and waveform history (s).
    SLOW_PERIOD_S = 0.5

    displacement = readback("RESP", "Respiration waveform: chest displacement of the mouse", "mm", 4)
    phase = readback("PHASE", "Respiratory phase, 0 at the start of inspiration to 1 at the end of the pause", "", 3)
    gate = enum_pv(
        "GATE",
        "Respiratory gate: Open (1) during end-expiration, Closed (0) otherwise; updated at each edge",
        GATE_STATES,
        read_only=True,
    )
    gate_fraction = readback("GATE_FRAC_RBV", "Fraction of each breathing cycle during which GATE is Open", "", 2)
    rate = readback("RATE", "Breathing rate of the breath under way", "bpm", 1)
    heart_rate = readback("HR", "Heart rate", "bpm", 0)
    temperature = readback("TEMP", "Body temperature", "C", 2)
    alarm = enum_pv(
        "ALARM", "ALARM while any vital is at or beyond one of its alarm limits", ("OK", "ALARM"), read_only=True
    )
    alarm_message = message_pv(
        "ALARM_MSG", "Which vitals are out of range, with their values and limits; empty when ALARM is OK"
    )
    message = message_pv("MSG", "Last change or refusal of an alarm limit, with the reason")
    rate_low = setpoint("RATE_LO", "Breathing rate low alarm limit (must stay below RATE_HI)", "bpm", 1)
    rate_high = setpoint("RATE_HI", "Breathing rate high alarm limit", "bpm", 1)
    heart_rate_low = setpoint("HR_LO", "Heart rate low alarm limit (must stay below HR_HI)", "bpm", 0)
    heart_rate_high = setpoint("HR_HI", "Heart rate high alarm limit", "bpm", 0)
    temperature_low = setpoint("TEMP_LO", "Body temperature low alarm limit (must stay below TEMP_HI)", "C", 2)
    temperature_high = setpoint("TEMP_HI", "Body temperature high alarm limit", "C", 2)
    history = pvproperty(
        name="RESP_HIST",
        value=[0.0],
        dtype=ChannelType.DOUBLE,
        max_length=HISTORY_MAX_POINTS,
        read_only=True,
        units="mm",
        precision=4,
        alarm_group="RESP_HIST",
        doc="The last history_s seconds of the respiration waveform, oldest first, for displays (2 Hz); "
        "always history_s * waveform_rate_hz samples",
    )
    history_step = readback("RESP_HIST_DT", "Time between RESP_HIST samples", "s", 4)

    def __init__(self, prefix: str, model: PhysiologyModel) -> None:
        cfg = model.config
        self._history_points = max(2, round(cfg.history_s * cfg.waveform_rate_hz))
        if self._history_points > HISTORY_MAX_POINTS:
            raise ConfigError(
                f"sim.physiology.history_s * sim.physiology.waveform_rate_hz = {self._history_points} samples; "
                f"the history PV holds at most {HISTORY_MAX_POINTS}: shorten history_s"
            )
        super().__init__(prefix)
        self.model = model
        self._vital_pvs = {"rate": self.rate, "heart_rate": self.heart_rate, "temperature": self.temperature}
        self._limit_pvs = {
            "rate": (self.rate_low, self.rate_high),
            "heart_rate": (self.heart_rate_low, self.heart_rate_high),
            "temperature": (self.temperature_low, self.temperature_high),
        }

    async def initialize(self) -> None:
        """Alarm limits from the config; the first values of every PV."""
        cfg = self.model.config
        await self.gate_fraction.write(cfg.gate_fraction)
        await self.history_step.write(1.0 / cfg.waveform_rate_hz)
        for vital, (low, high) in self.model.limits.items():
            low_pv, high_pv = self._limit_pvs[vital]
            await low_pv.write(low, verify_value=False)
            await high_pv.write(high, verify_value=False)
            await self._vital_pvs[vital].write_metadata(lower_alarm_limit=low, upper_alarm_limit=high)
        t = self.model.clock.now()
        await self._publish_fast(t, time.time())
        await self._publish_slow(t, time.time(), force=True)

    # ---- alarm limits ----------------------------------------------------------------

    async def _put_limit(self, vital: str, low: float, high: float) -> None:
        spec = VITALS[vital]
        try:
            self.model.set_limits(vital, low, high)
        except LimitRefused as exc:
            await self.message.write(fixed_length(str(exc)))
            raise
        await self.message.write(fixed_length(f"{spec.label} alarm limits {low:g} to {high:g} {spec.unit}"))
        await self._vital_pvs[vital].write_metadata(lower_alarm_limit=low, upper_alarm_limit=high)
        t = self.model.clock.now()
        await self._publish_slow(t, time.time(), force=True)

    @rate_low.putter
    async def rate_low(self, instance, value):
        await self._put_limit("rate", value, self.model.limits["rate"][1])

    @rate_high.putter
    async def rate_high(self, instance, value):
        await self._put_limit("rate", self.model.limits["rate"][0], value)

    @heart_rate_low.putter
    async def heart_rate_low(self, instance, value):
        await self._put_limit("heart_rate", value, self.model.limits["heart_rate"][1])

    @heart_rate_high.putter
    async def heart_rate_high(self, instance, value):
        await self._put_limit("heart_rate", self.model.limits["heart_rate"][0], value)

    @temperature_low.putter
    async def temperature_low(self, instance, value):
        await self._put_limit("temperature", value, self.model.limits["temperature"][1])

    @temperature_high.putter
    async def temperature_high(self, instance, value):
        await self._put_limit("temperature", self.model.limits["temperature"][0], value)

    # ---- the one update loop ---------------------------------------------------------

    @displacement.startup
    async def displacement(self, instance, async_lib):
        """Sample at waveform_rate_hz and at every gate edge; slow updates every SLOW_PERIOD_S."""
        clock, model = self.model.clock, self.model
        period = 1.0 / model.config.waveform_rate_hz
        next_sample = next_slow = clock.now()
        while True:
            t = clock.now()
            stamp = time.time()
            await self._publish_fast(t, stamp)
            if t >= next_slow:
                await self._publish_slow(t, stamp)
                next_slow = max(next_slow + self.SLOW_PERIOD_S, t)
            next_sample = max(next_sample + period, t)
            wake = min(next_sample, model.next_gate_edge(t))
            await asyncio.sleep(max(0.0, wake - clock.now()))

    async def _publish_fast(self, t: float, stamp: float) -> None:
        """Waveform, phase and gate, all for the same instant and with the same timestamp."""
        await self.displacement.write(float(self.model.displacement_at(t)), timestamp=stamp)
        await self.phase.write(float(self.model.phase_at(t)), timestamp=stamp)
        gate = GATE_STATES[int(self.model.gated_at(t))]
        if self.gate.value != gate:
            await self.gate.write(gate, timestamp=stamp)
        rate = float(self.model.rate_at(t))
        if self.rate.value != rate:
            await self.rate.write(rate, timestamp=stamp)

    async def _publish_slow(self, t: float, stamp: float, force: bool = False) -> None:
        """Heart rate, temperature, alarm and the waveform history."""
        vitals = self.model.vitals_at(t)
        for name, pv in self._vital_pvs.items():
            if force or pv.value != vitals[name]:
                await pv.write(vitals[name], timestamp=stamp)
        problems = self.model.alarms(vitals)
        alarm = "ALARM" if problems else "OK"
        if force or self.alarm.value != alarm:
            await self.alarm.write(alarm, timestamp=stamp)
        text = fixed_length("; ".join(problems))
        if self.alarm_message.value != text:
            await self.alarm_message.write(text, timestamp=stamp)
        step = 1.0 / self.model.config.waveform_rate_hz
        times = t - step * np.arange(self._history_points)[::-1]
        await self.history.write(self.model.displacement_at(times), timestamp=stamp)
