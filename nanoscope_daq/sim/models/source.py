"""Liquid-metal-jet microfocus X-ray source: jet warm-up, HV and power ramps, shutter, interlock.

The rules a real source enforces are enforced here, so the IOC only translates them to
PVs: high voltage needs a warmed-up jet and a healthy interlock, the electron-beam power
is limited by the spot size (a fixed power density on the jet), and an interlock trip
drops the high voltage and closes the shutter. Warm-up and ramps run in process time;
the shutter moves in real time.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from ...config import SimSourceConfig, SourceConfig
from ..clock import SimClock

#: Slowest settable ramp rate, as a fraction of the configured (fastest) rate.
SLOWEST_RAMP_FRACTION = 0.01


class SourceState(enum.Enum):
    """Operating state; ``value`` is the name served on the state PV."""

    OFF = "Off"
    WARMING_UP = "WarmingUp"
    READY = "Ready"
    ON = "On"
    FAULT = "Fault"


class ShutterPosition(enum.Enum):
    """Where the beam shutter is; ``value`` is the name served on the shutter readback PV."""

    CLOSED = "Closed"
    OPEN = "Open"
    MOVING = "Moving"


class SourceRefused(ValueError):
    """The source cannot accept a command now or with that value; the message says why and what to do."""


@dataclass(frozen=True)
class Ramp:
    """A value moving linearly from ``start`` to ``target`` at ``rate`` per process second, from ``t0``."""

    start: float
    target: float
    t0: float
    rate: float

    @classmethod
    def holding(cls, value: float) -> Ramp:
        return cls(value, value, 0.0, 1.0)

    def at(self, t: float) -> float:
        if t <= self.t0:
            return self.start
        step = self.rate * (t - self.t0)
        if self.target >= self.start:
            return min(self.target, self.start + step)
        return max(self.target, self.start - step)

    @property
    def end(self) -> float:
        """Process time at which the target is reached."""
        return self.t0 + abs(self.target - self.start) / self.rate


@dataclass(frozen=True)
class ShutterMotion:
    """The shutter's last command and when it was given (real time)."""

    open: bool
    t_command: float
    move_s: float

    def position(self, t: float) -> ShutterPosition:
        if t - self.t_command < self.move_s:
            return ShutterPosition.MOVING
        return ShutterPosition.OPEN if self.open else ShutterPosition.CLOSED

    @property
    def arrival(self) -> float:
        return self.t_command + self.move_s


@dataclass(frozen=True)
class SourceOutput:
    """What the source emits at one instant: the camera's view of it."""

    kv: float
    power_w: float
    current_ma: float
    spot_um: float
    shutter_open: bool
    xrays_on: bool

    @property
    def beam_on(self) -> bool:
        """X-rays leave the housing: emission on and the shutter fully open."""
        return self.xrays_on and self.shutter_open


class SourceModel:
    """State machine Off -> WarmingUp -> Ready -> On (and Fault) with ramped HV and power readbacks."""

    def __init__(self, config: SourceConfig, behaviour: SimSourceConfig, clock: SimClock) -> None:
        self.config = config
        self.behaviour = behaviour
        self.clock = clock
        self.kv_setpoint = config.kv_min
        self.power_setpoint_w = 0.0
        self.spot_um = config.spot_default_um
        self.kv_ramp_per_s = behaviour.kv_ramp_per_s
        self.power_ramp_w_per_s = behaviour.power_ramp_w_per_s
        self.fault: str | None = None
        self._jet_started: float | None = None
        self._hv_on = False
        self._kv = Ramp.holding(0.0)
        self._power = Ramp.holding(0.0)
        self._shutter = ShutterMotion(open=False, t_command=-math.inf, move_s=behaviour.shutter_move_s)

    # ---- readbacks -------------------------------------------------------------------

    def _process_time(self, t_process: float | None) -> float:
        return self.clock.process_now() if t_process is None else t_process

    @property
    def jet_on(self) -> bool:
        return self._jet_started is not None

    @property
    def hv_on(self) -> bool:
        return self._hv_on

    @property
    def shutter_commanded_open(self) -> bool:
        return self._shutter.open

    @property
    def interlock_ok(self) -> bool:
        return self.fault is None

    def warmup_progress(self, t_process: float | None = None) -> float:
        """Warm-up completed, in percent (0 with the jet off)."""
        if self._jet_started is None:
            return 0.0
        if self.behaviour.warmup_s == 0:
            return 100.0
        elapsed = self._process_time(t_process) - self._jet_started
        return min(100.0, 100.0 * elapsed / self.behaviour.warmup_s)

    def state(self, t_process: float | None = None) -> SourceState:
        if self.fault is not None:
            return SourceState.FAULT
        if self._jet_started is None:
            return SourceState.OFF
        if self.warmup_progress(t_process) < 100.0:
            return SourceState.WARMING_UP
        return SourceState.ON if self._hv_on else SourceState.READY

    def power_limit_w(self, spot_um: float | None = None) -> float:
        """Largest power allowed on a spot: a fixed power density, capped by the source's maximum."""
        spot = self.spot_um if spot_um is None else spot_um
        return min(self.config.power_max_w, self.config.power_per_um_spot_w * spot)

    def shutter_position(self, t_real: float | None = None) -> ShutterPosition:
        return self._shutter.position(self.clock.now() if t_real is None else t_real)

    def output(self, t_process: float | None = None) -> SourceOutput:
        """kV, W, mA, spot, shutter and emission at process time ``t_process`` (default now); cheap."""
        t = self._process_time(t_process)
        kv = self._kv.at(t)
        power = self._power.at(t)
        current_ma = power / kv if kv > 0 else 0.0  # W / kV = mA
        shutter = self._shutter.position(self.clock.to_real(t))
        return SourceOutput(
            kv=kv,
            power_w=power,
            current_ma=current_ma,
            spot_um=self.spot_um,
            shutter_open=shutter is ShutterPosition.OPEN,
            xrays_on=bool(self._hv_on and kv > 0 and power > 0),
        )

    def next_event_in(self, t_real: float | None = None) -> float:
        """Real seconds until the next discrete change (ramp end, warm-up end, shutter arrival); inf if none."""
        now = self.clock.now() if t_real is None else t_real
        process_events = [self._kv.end, self._power.end]
        if self._jet_started is not None:
            process_events.append(self._jet_started + self.behaviour.warmup_s)
        real_events = [self.clock.to_real(t) for t in process_events] + [self._shutter.arrival]
        upcoming = [t - now for t in real_events if t > now]
        return min(upcoming, default=math.inf)

    # ---- commands (each raises SourceRefused with the reason and the fix) --------------

    def start_jet(self) -> None:
        """Start the metal jet; warm-up and conditioning take ``warmup_s`` process seconds."""
        self._refuse_if_tripped("jet start")
        if self._jet_started is None:
            self._jet_started = self.clock.process_now()

    def stop_jet(self) -> None:
        """Switch the high voltage off and stop the jet; the next start needs a full warm-up."""
        self._switch_hv_off()
        self._jet_started = None

    def set_hv(self, on: bool) -> None:
        """High voltage on (readbacks ramp from 0: kV first, then power) or off (immediately 0)."""
        if not on:
            self._switch_hv_off()
            return
        self._refuse_if_tripped("high voltage")
        t = self.clock.process_now()
        state = self.state(t)
        if state is SourceState.OFF:
            raise SourceRefused(
                "high voltage refused: the source is Off; start the jet and wait for warm-up (state Ready)"
            )
        if state is SourceState.WARMING_UP:
            remaining = self.behaviour.warmup_s * (1 - self.warmup_progress(t) / 100.0)
            raise SourceRefused(
                f"high voltage refused: warm-up is {self.warmup_progress(t):.0f}% complete "
                f"({remaining:.0f} s of {self.behaviour.warmup_s:.0f} s remain); wait for state Ready"
            )
        if self._hv_on:
            return
        self._hv_on = True
        self._kv = Ramp(0.0, self.kv_setpoint, t, self.kv_ramp_per_s)
        self._power = Ramp(0.0, self.power_setpoint_w, self._kv.end, self.power_ramp_w_per_s)

    def _refuse_if_tripped(self, action: str) -> None:
        if self.fault is not None:
            raise SourceRefused(f"{action} refused: the interlock is tripped ({self.fault}); reset the interlock first")

    def _retarget(self) -> None:
        """With the HV on, ramp the readbacks from where they are to the present set points and rates.

        Power not yet ramping (kV still rising after HV on) waits for the new kV ramp to end.
        """
        if not self._hv_on:
            return
        t = self.clock.process_now()
        power_waiting = t < self._power.t0
        self._kv = Ramp(self._kv.at(t), self.kv_setpoint, t, self.kv_ramp_per_s)
        power_start = self._kv.end if power_waiting else t
        self._power = Ramp(self._power.at(t), self.power_setpoint_w, power_start, self.power_ramp_w_per_s)

    def _switch_hv_off(self) -> None:
        self._hv_on = False
        self._kv = Ramp.holding(0.0)
        self._power = Ramp.holding(0.0)

    def set_kv(self, kv: float) -> None:
        """Acceleration voltage set point; the readback ramps to it while the HV is on."""
        kv = float(kv)
        low, high = self.config.kv_min, self.config.kv_max
        if not low <= kv <= high:
            raise SourceRefused(f"high voltage {kv:g} kV refused: the allowed range is {low:g} to {high:g} kV")
        self.kv_setpoint = kv
        self._retarget()

    def set_power(self, watts: float) -> None:
        """Electron-beam power set point, limited by the spot size."""
        watts = float(watts)
        limit = self.power_limit_w()
        if not 0 <= watts <= limit:
            raise SourceRefused(
                f"power {watts:g} W refused: the allowed range is 0 to {limit:g} W for a {self.spot_um:g} um spot "
                f"({self.config.power_per_um_spot_w:g} W per um of spot, at most {self.config.power_max_w:g} W); "
                "lower the power or enlarge the spot"
            )
        self.power_setpoint_w = watts
        self._retarget()

    def set_spot(self, spot_um: float) -> None:
        """Focal spot size; refused when the present power set point would exceed the new spot's limit."""
        spot_um = float(spot_um)
        low, high = self.config.spot_min_um, self.config.spot_max_um
        if not low <= spot_um <= high:
            raise SourceRefused(f"spot size {spot_um:g} um refused: the allowed range is {low:g} to {high:g} um")
        limit = self.power_limit_w(spot_um)
        if self.power_setpoint_w > limit:
            raise SourceRefused(
                f"spot size {spot_um:g} um refused: it allows at most {limit:g} W but the power set point is "
                f"{self.power_setpoint_w:g} W; lower the power first"
            )
        self.spot_um = spot_um

    def ramp_rate_range(self, configured: float) -> tuple[float, float]:
        """Settable range of a ramp rate: from 1% of the configured (fastest) rate up to it."""
        return configured * SLOWEST_RAMP_FRACTION, configured

    def set_kv_ramp(self, kv_per_s: float) -> None:
        self.kv_ramp_per_s = self._checked_rate("high-voltage ramp rate", kv_per_s, self.behaviour.kv_ramp_per_s,
                                                "kV/s")
        self._retarget()

    def set_power_ramp(self, w_per_s: float) -> None:
        self.power_ramp_w_per_s = self._checked_rate("power ramp rate", w_per_s, self.behaviour.power_ramp_w_per_s,
                                                     "W/s")
        self._retarget()

    def _checked_rate(self, what: str, rate: float, configured: float, unit: str) -> float:
        rate = float(rate)
        low, high = self.ramp_rate_range(configured)
        if not low <= rate <= high:
            raise SourceRefused(f"{what} {rate:g} {unit} refused: the allowed range is {low:g} to {high:g} {unit}")
        return rate

    def command_shutter(self, open_: bool) -> None:
        """Move the shutter (``shutter_move_s`` real seconds); opening is refused while the interlock is tripped."""
        if open_:
            self._refuse_if_tripped("shutter open")
        if self._shutter.open == open_:
            return  # already there or on its way
        self._shutter = ShutterMotion(open=open_, t_command=self.clock.now(), move_s=self.behaviour.shutter_move_s)

    def trip(self, reason: str) -> None:
        """Interlock trip: high voltage off, shutter closing, state Fault until reset."""
        self.fault = reason
        self._switch_hv_off()
        self.command_shutter(False)

    def reset_interlock(self) -> None:
        """Clear a trip; the source returns to Ready (or resumes warming up) with the HV off."""
        self.fault = None
