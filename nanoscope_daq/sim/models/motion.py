"""Motion of one motor axis: exact trapezoidal profiles, retargets, stops and jogs.

No EPICS here. A motion is a list of constant-acceleration phases in dial
coordinates; every query evaluates the phase that holds at time ``t`` analytically,
so ``position_at`` is exact (not sampled) for any time of the current move and of
the recent past. Users see user coordinates: ``user = direction * dial + offset``,
as in the EPICS motor record.

Acceleration follows the motor record's ACCL: ``acceleration`` is the time in
seconds to reach the commanded speed from rest, so a move from rest accelerates at
VELO / ACCL and a jog at JVEL / ACCL. A motion that starts from speed ``v`` uses
max(speed, |v|) / ACCL, so every speed change (a jog slowing down, a reversal's
braking, a stop) takes at most ACCL seconds per ramp, as a real drive would.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from ...config import AxisConfig
from ..clock import SimClock

# How long past phases are kept, so position_at() answers for frames already taken.
HISTORY_S = 600.0


class LimitViolation(ValueError):
    """A requested target lies outside the axis' soft limits."""


@dataclass(frozen=True)
class Phase:
    """Constant acceleration ``a`` from dial position ``x0`` at speed ``v0``, starting at ``t0``."""

    t0: float
    x0: float
    v0: float
    a: float

    def position(self, t: float) -> float:
        dt = t - self.t0
        return self.x0 + dt * (self.v0 + 0.5 * self.a * dt)

    def velocity(self, t: float) -> float:
        return self.v0 + self.a * (t - self.t0)


class Trajectory:
    """Phases from the past to the end of the current motion, replaced as a whole (never
    edited), so a reader in another thread (the camera's) always sees one consistent plan."""

    def __init__(self, phases: list[Phase], rate: float) -> None:
        self.phases = tuple(phases)
        self.starts = [p.t0 for p in phases]
        self.rate = rate  # acceleration of the motion, egu/s^2 (a stop uses it)
        last = phases[-1]
        at_rest = last.v0 == 0.0 and last.a == 0.0
        self.end = last.t0 if at_rest else math.inf
        self.target = last.x0 if at_rest else math.copysign(math.inf, last.v0)
        self._arrays: tuple[np.ndarray, ...] | None = None

    def phase_at(self, t: float) -> Phase:
        return self.phases[max(bisect.bisect_right(self.starts, t) - 1, 0)]

    def positions_at(self, t: np.ndarray) -> np.ndarray:
        """Dial positions at the times ``t`` (vectorised)."""
        if self._arrays is None:
            columns = zip(*((p.t0, p.x0, p.v0, p.a) for p in self.phases))
            self._arrays = tuple(np.array(column, dtype=float) for column in columns)
        t0, x0, v0, a = self._arrays
        i = np.clip(np.searchsorted(t0, t, side="right") - 1, 0, None)
        dt = t - t0[i]
        return x0[i] + dt * (v0[i] + 0.5 * a[i] * dt)


def _sign(x: float) -> float:
    return math.copysign(1.0, x) if x else 0.0


class Axis:
    """One motor axis of the simulated instrument, driven by the simulator's real-time clock."""

    def __init__(self, config: AxisConfig, clock: SimClock) -> None:
        self.config = config
        self.clock = clock
        self._max_velocity = config.max_velocity
        self._velocity = config.velocity
        self._jog_velocity = config.velocity
        self._acceleration = config.acceleration
        self.resolution = config.resolution
        self.offset = 0.0
        self._direction = 1
        self._dial_limits = (config.low_limit, config.high_limit)
        at_rest = Phase(0.0, 0.0, 0.0, 0.0)  # at dial 0 since the clock started
        self._trajectory = Trajectory([at_rest], config.velocity / config.acceleration)

    # -- settings -------------------------------------------------------------------

    @property
    def velocity(self) -> float:
        """Cruise speed of moves (egu/s, the record's VELO)."""
        return self._velocity

    @velocity.setter
    def velocity(self, value: float) -> None:
        self._velocity = self._checked_speed("velocity (VELO)", value)

    @property
    def jog_velocity(self) -> float:
        """Speed of continuous motion (egu/s, the record's JVEL)."""
        return self._jog_velocity

    @jog_velocity.setter
    def jog_velocity(self, value: float) -> None:
        self._jog_velocity = self._checked_speed("jog velocity (JVEL)", value)

    @property
    def max_velocity(self) -> float:
        """Fastest speed the axis may be commanded (egu/s, the record's VMAX)."""
        return self._max_velocity

    @max_velocity.setter
    def max_velocity(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"max velocity (VMAX) must be > 0 {self.config.egu}/s, got {value}")
        slower = max(self._velocity, self._jog_velocity)
        if value < slower:
            raise ValueError(
                f"max velocity (VMAX) {value} {self.config.egu}/s is below the velocity in use "
                f"({slower} {self.config.egu}/s); lower VELO and JVEL first"
            )
        self._max_velocity = value

    @property
    def acceleration(self) -> float:
        """Seconds to reach the commanded speed from rest (the record's ACCL)."""
        return self._acceleration

    @acceleration.setter
    def acceleration(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"acceleration time (ACCL) must be > 0 s, got {value}")
        self._acceleration = value

    def _checked_speed(self, what: str, value: float) -> float:
        egu = self.config.egu
        if not value > 0:
            raise ValueError(f"{what} must be > 0 {egu}/s, got {value}")
        if value > self._max_velocity:
            raise ValueError(
                f"{what} {value} {egu}/s exceeds the max velocity (VMAX) {self._max_velocity} {egu}/s; "
                f"choose at most {self._max_velocity} or raise VMAX"
            )
        return value

    # -- coordinates and limits ---------------------------------------------------

    @property
    def direction(self) -> int:
        """+1 or -1: sign of user coordinates relative to dial (the record's DIR)."""
        return self._direction

    @direction.setter
    def direction(self, value: int) -> None:
        if value not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {value!r}")
        self._direction = value

    def to_user(self, dial: float) -> float:
        return self._direction * dial + self.offset

    def to_dial(self, user: float) -> float:
        return (user - self.offset) * self._direction

    @property
    def dial_limits(self) -> tuple[float, float]:
        """Soft limits (low, high) in dial coordinates; (0, 0) disables them, as in the record."""
        return self._dial_limits

    @dial_limits.setter
    def dial_limits(self, limits: tuple[float, float]) -> None:
        low, high = (float(v) for v in limits)
        self._dial_limits = (low, high)

    @property
    def user_limits(self) -> tuple[float, float]:
        """Soft limits (low, high) in user coordinates."""
        a, b = (self.to_user(v) for v in self._dial_limits)
        return (min(a, b), max(a, b))

    @user_limits.setter
    def user_limits(self, limits: tuple[float, float]) -> None:
        a, b = (self.to_dial(v) for v in limits)
        self._dial_limits = (min(a, b), max(a, b))

    @property
    def limits_enabled(self) -> bool:
        return self._dial_limits != (0.0, 0.0)

    def check_target(self, target: float) -> None:
        """Raise :class:`LimitViolation` unless ``target`` (user) lies within the soft limits."""
        if not self.limits_enabled:
            return
        low, high = self.user_limits
        if not low <= target <= high:
            raise LimitViolation(
                f"target {target} {self.config.egu} is outside the soft limits [{low}, {high}] "
                f"{self.config.egu} (LLM/HLM); move within them or change the limits"
            )

    # -- queries (exact, analytic) ------------------------------------------------

    def dial_position_at(self, t: float) -> float:
        return self._trajectory.phase_at(t).position(t)

    def position_at(self, t: float) -> float:
        """User position at time ``t`` (seconds of ``clock.now()``)."""
        return self.to_user(self._trajectory.phase_at(t).position(t))

    def velocity_at(self, t: float) -> float:
        """User velocity (egu/s) at time ``t``."""
        return self._direction * self._trajectory.phase_at(t).velocity(t)

    def positions_at(self, t: np.ndarray) -> np.ndarray:
        """User positions at many times at once (the camera's per-frame angles)."""
        return self.to_user(self._trajectory.positions_at(np.asarray(t, dtype=float)))

    def is_moving(self, t: float | None = None) -> bool:
        return self._now(t) < self._trajectory.end

    def move_done_at(self) -> float:
        """Clock time at which the current motion ends (``inf`` for an unbounded jog)."""
        return self._trajectory.end

    @property
    def target(self) -> float:
        """User position the current motion ends at (``±inf`` for an unbounded jog)."""
        target = self._trajectory.target
        return self._direction * target if math.isinf(target) else self.to_user(target)

    # -- commands ------------------------------------------------------------------

    def move(self, target: float, t: float | None = None) -> float:
        """Move to user ``target``, from the current position and velocity; returns the end time.

        Mid-move this retargets smoothly: the velocity never jumps.
        """
        self.check_target(target)
        t = self._now(t)
        rate = self._rate_for(self._velocity, t)
        self._replace_from(t, self._plan_to(t, self.to_dial(target), self._velocity, rate), rate)
        return self.move_done_at()

    def jog(self, direction: int, t: float | None = None) -> float:
        """Turn continuously in user ``direction`` (+1/-1) at the jog velocity until :meth:`stop`.

        With soft limits enabled the jog decelerates to rest at the limit it runs
        towards, as the motor record does; with limits disabled it never ends.
        """
        if direction not in (1, -1):
            raise ValueError(f"jog direction must be +1 or -1, got {direction!r}")
        t = self._now(t)
        speed = self._jog_velocity
        rate = self._rate_for(speed, t)
        dial_direction = direction * self._direction
        if self.limits_enabled:
            x_now = self.dial_position_at(t)
            limit = self._dial_limits[1] if dial_direction > 0 else self._dial_limits[0]
            if (limit - x_now) * dial_direction > 0:
                phases = self._plan_to(t, limit, speed, rate)
            else:
                phases = self._plan_stop(t, rate)
        else:
            phases = self._plan_cruise(t, dial_direction * speed, rate)
        self._replace_from(t, phases, rate)
        return self.move_done_at()

    def stop(self, t: float | None = None) -> float:
        """Decelerate to rest at the acceleration of the motion in progress; returns the end time."""
        t = self._now(t)
        rate = self._trajectory.rate
        self._replace_from(t, self._plan_stop(t, rate), rate)
        return self.move_done_at()

    def set_position(self, user: float, t: float | None = None) -> None:
        """Redefine the current user position by changing the offset (SET, FOFF=Variable)."""
        t = self._require_idle(t, "redefine the position")
        self.offset = user - self._direction * self.dial_position_at(t)

    def set_dial_position(self, dial: float, t: float | None = None) -> None:
        """Redefine the current dial position, keeping the offset (SET, FOFF=Frozen)."""
        t = self._require_idle(t, "redefine the position")
        self._replace_from(t, [Phase(t, dial, 0.0, 0.0)], self._trajectory.rate)

    # -- planning ------------------------------------------------------------------

    def _now(self, t: float | None) -> float:
        return self.clock.now() if t is None else t

    def _rate_for(self, speed: float, t: float) -> float:
        """Acceleration (egu/s^2) of a new motion at ``speed`` starting at ``t``."""
        return max(speed, abs(self._trajectory.phase_at(t).velocity(t))) / self._acceleration

    def _require_idle(self, t: float | None, what: str) -> float:
        t = self._now(t)
        if self.is_moving(t):
            raise RuntimeError(f"cannot {what} while the axis moves; stop it first")
        return t

    def _state(self, t: float) -> tuple[float, float]:
        phase = self._trajectory.phase_at(t)
        return phase.position(t), phase.velocity(t)

    def _plan_stop(self, t: float, rate: float) -> list[Phase]:
        x0, v0 = self._state(t)
        if v0 == 0.0:
            return [Phase(t, x0, 0.0, 0.0)]
        duration = abs(v0) / rate
        return [Phase(t, x0, v0, -_sign(v0) * rate), Phase(t + duration, x0 + 0.5 * v0 * duration, 0.0, 0.0)]

    def _plan_cruise(self, t: float, velocity: float, rate: float) -> list[Phase]:
        """Change speed smoothly to ``velocity`` and keep it forever."""
        x0, v0 = self._state(t)
        duration = abs(velocity - v0) / rate
        phases = [Phase(t, x0, v0, _sign(velocity - v0) * rate)] if duration else []
        x1 = x0 + 0.5 * (v0 + velocity) * duration
        return [*phases, Phase(t + duration, x1, velocity, 0.0)]

    def _plan_to(self, t: float, x_target: float, speed: float, rate: float) -> list[Phase]:
        """Phases from the state at ``t`` to rest at ``x_target``: brake if needed, then a trapezoid."""
        x0, v0 = self._state(t)
        phases: list[Phase] = []
        distance = x_target - x0
        if v0 and (v0 * distance < 0 or abs(distance) < v0 * v0 / (2 * rate)):
            # Moving away from the target, or too fast to stop before it: brake to rest first.
            phases = self._plan_stop(t, rate)[:1]
            duration = abs(v0) / rate
            t, x0, v0 = t + duration, x0 + 0.5 * v0 * duration, 0.0
            distance = x_target - x0
        s, u0, length = _sign(distance), abs(v0), abs(distance)
        if u0 <= speed:
            peak = min(speed, math.sqrt(rate * length + 0.5 * u0 * u0))
        else:
            peak = speed
        t1 = abs(peak - u0) / rate
        d1 = 0.5 * (u0 + peak) * t1
        t3 = peak / rate
        d3 = 0.5 * peak * t3
        t2 = max(length - d1 - d3, 0.0) / peak if peak else 0.0
        x = x0
        for duration, start_speed, accel in ((t1, u0, _sign(peak - u0) * rate), (t2, peak, 0.0), (t3, peak, -rate)):
            if duration > 0:
                phases.append(Phase(t, x, s * start_speed, s * accel))
                x += s * (start_speed * duration + 0.5 * accel * duration * duration)
                t += duration
        return [*phases, Phase(t, x_target, 0.0, 0.0)]

    def _replace_from(self, t: float, phases: list[Phase], rate: float) -> None:
        """Keep the history before ``t`` (the last HISTORY_S of it), then follow ``phases``."""
        old = self._trajectory
        keep = bisect.bisect_left(old.starts, t)
        drop = max(bisect.bisect_right(old.starts, t - HISTORY_S) - 1, 0)
        self._trajectory = Trajectory([*old.phases[drop:keep], *phases], rate)
