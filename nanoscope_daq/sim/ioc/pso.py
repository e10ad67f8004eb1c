"""Position-synchronized output (PSO) of the rotation stage (``<P>ROT:PSO:``).

Like an Aerotech PSO on the rotary encoder: armed with a grid of angles
``START + i * STEP`` (``i < COUNT``), it fires one pulse each time the axis crosses
the next grid angle in the direction of STEP. The crossing times come from the
axis' exact trajectory (sampled ahead, then bisected on ``position_at``), so each
pulse carries its true clock time and the encoder angle latched at that instant,
whatever the event loop's latency. The camera, wired to :attr:`PsoIOC.output`,
starts one frame per pulse in External trigger mode.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from ..models.motion import Axis
from .pvs import cancel_and_wait

LOOKAHEAD_S = 0.5
"""How far ahead the trajectory is searched for the next crossing."""
SAMPLE_S = 1e-3
"""Spacing of the trajectory samples that bracket a crossing before bisection."""
RECHECK_S = 0.05
"""Longest sleep before the (possibly re-planned) trajectory is searched again."""
BISECTION_TOLERANCE_S = 1e-9
STATES = ("Disarmed", "Armed", "Done")
MESSAGE_LENGTH = 256


@dataclass(frozen=True)
class TriggerPulse:
    """One output pulse: rising edge at ``time_s`` (simulator clock), ``width_s`` long."""

    time_s: float
    width_s: float
    encoder_deg: float
    """Encoder angle latched at the rising edge (quantised to the encoder resolution)."""


class TriggerLine:
    """The cable from the PSO output to the camera's trigger input (in-process)."""

    def __init__(self) -> None:
        self._receivers: list[Callable[[TriggerPulse], None]] = []

    def connect(self, receiver: Callable[[TriggerPulse], None]) -> None:
        self._receivers.append(receiver)

    def fire(self, pulse: TriggerPulse) -> None:
        for receiver in self._receivers:
            receiver(pulse)


def find_crossing(axis: Axis, target: float, direction: int, t_from: float, t_to: float) -> float | None:
    """First time in ``[t_from, t_to]`` the axis reaches ``target`` moving in ``direction`` (+1/-1).

    Only a real crossing counts: the axis must be short of the target before it.
    Returns None if it does not cross in the window.
    """
    count = max(2, math.ceil((t_to - t_from) / SAMPLE_S) + 1)
    times = np.linspace(t_from, t_to, count)
    short = direction * (axis.positions_at(times) - target) < 0
    crossings = np.flatnonzero(short[:-1] & ~short[1:])
    if crossings.size == 0:
        return None
    low, high = float(times[crossings[0]]), float(times[crossings[0] + 1])
    while high - low > BISECTION_TOLERANCE_S:
        mid = 0.5 * (low + high)
        if direction * (axis.position_at(mid) - target) < 0:
            low = mid
        else:
            high = mid
    return high


class PsoIOC(PVGroup):
    """Position-synchronized output of the rotation stage (Aerotech PSO class).

    Set START, STEP and COUNT, then ARM: while the stage turns, one pulse fires as it
    crosses each angle START + i*STEP (i < COUNT) in the direction of STEP, and the
    camera (TriggerMode External) starts one frame per pulse, recording the latched
    encoder angle. START must lie ahead of the stage: a grid angle is fired only
    when crossed. STATUS goes Armed -> Done after COUNT pulses; DISARM stops early.
    """

    start = pvproperty(name="START", value=0.0, units="deg", precision=4, doc="First grid angle")
    step = pvproperty(
        name="STEP", value=1.0, units="deg", precision=4,
        doc="Grid spacing; its sign is the direction of rotation that fires",
    )
    count = pvproperty(name="COUNT", value=1, doc="Number of grid angles (pulses) to fire")
    width = pvproperty(
        name="WIDTH", value=1e-4, units="s", precision=6,
        doc="Pulse width (the exposure time in the camera's External Exposure mode)",
    )
    arm = pvproperty(name="ARM", value=0, doc="Write 1 to arm with the present START, STEP, COUNT, WIDTH")
    disarm = pvproperty(name="DISARM", value=0, doc="Write 1 to disarm; pulses stop at once")
    status = pvproperty(
        name="STATUS", value=STATES[0], dtype=ChannelType.ENUM, enum_strings=STATES, read_only=True,
        doc="Disarmed, Armed (waiting for crossings) or Done (COUNT pulses fired)",
    )
    fired = pvproperty(name="FIRED", value=0, read_only=True, doc="Pulses fired since the last ARM")
    last_angle = pvproperty(
        name="LAST_ANGLE", value=0.0, units="deg", precision=4, read_only=True,
        doc="Encoder angle latched by the last pulse",
    )
    last_time = pvproperty(
        name="LAST_TIME", value=0.0, units="s", precision=6, read_only=True,
        doc="Simulator clock time of the last pulse",
    )
    message = pvproperty(
        name="MSG", value="", dtype=ChannelType.CHAR, max_length=MESSAGE_LENGTH, string_encoding="utf-8",
        read_only=True, doc="Last event or refusal, with its reason",
    )

    def __init__(self, prefix: str, axis: Axis, **kwargs) -> None:
        super().__init__(prefix, **kwargs)
        self.axis = axis
        self.output = TriggerLine()
        self._task: asyncio.Task | None = None

    @arm.putter
    async def arm(self, instance, value: int) -> int:
        if not value:
            return 0
        start, step, count, width = self.start.value, self.step.value, self.count.value, self.width.value
        problem = None
        if step == 0:
            problem = "STEP is 0; set a non-zero grid spacing (its sign gives the direction)"
        elif count < 1:
            problem = f"COUNT is {count}; set at least 1 pulse"
        elif not width > 0:
            problem = f"WIDTH is {width} s; set a positive pulse width"
        if problem:
            await self.message.write(f"ARM refused: {problem}")
            raise ValueError(problem)
        await self._stop()
        await self.fired.write(0)
        await self.status.write("Armed")
        await self.message.write(f"armed: {count} pulses from {start} deg every {step} deg")
        self._task = asyncio.create_task(self._fire_grid(start, step, count, width))
        return 0

    @disarm.putter
    async def disarm(self, instance, value: int) -> int:
        if value:
            await self._stop()
            await self.status.write("Disarmed")
            await self.message.write(f"disarmed after {self.fired.value} pulses")
        return 0

    async def _stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def _encoder(self, t: float) -> float:
        resolution = self.axis.resolution
        return round(self.axis.position_at(t) / resolution) * resolution

    async def _fire_grid(self, start: float, step: float, count: int, width: float) -> None:
        direction = 1 if step > 0 else -1
        t_from = self.axis.clock.now()
        for index in range(count):
            crossing = await self._wait_for_crossing(start + index * step, direction, t_from)
            pulse = TriggerPulse(crossing, width, self._encoder(crossing))
            self.output.fire(pulse)
            await self.fired.write(index + 1)
            await self.last_angle.write(pulse.encoder_deg)
            await self.last_time.write(crossing)
            t_from = crossing
        await self.status.write("Done")
        await self.message.write(f"done: {count} pulses fired")

    async def _wait_for_crossing(self, target: float, direction: int, t_from: float) -> float:
        """Sleep until the axis crosses ``target``; returns the exact crossing time.

        The trajectory ahead is only a forecast (a new move may replace it), so it is
        searched again at least every RECHECK_S until the crossing lies in the past.
        """
        clock = self.axis.clock
        while True:
            now = clock.now()
            crossing = find_crossing(self.axis, target, direction, t_from, now + LOOKAHEAD_S)
            if crossing is not None and crossing <= now:
                return crossing
            if crossing is None:
                t_from = max(t_from, now)
                await asyncio.sleep(RECHECK_S)
            else:
                await asyncio.sleep(min(crossing - now, RECHECK_S))
