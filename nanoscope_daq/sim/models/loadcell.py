"""Deben-class in-situ loading frame with a mouse long bone as specimen (physics only).

Sign convention. Internally everything is *tension-positive*: the crosshead position
grows when the jaws open and a tensile force is positive. The controller shows force,
extension and targets in the frame of its loading mode: in TENSION mode as they are,
in COMPRESSION mode sign-flipped, so compressing the specimen reads as positive force
and positive extension (the Deben convention). Travel limits are physical
(``extension_min_mm .. extension_max_mm``, tension-positive).

Everything here runs on process time (``clock.process_now()``): crosshead travel
(speed in mm/min), stress relaxation and the stability timing of moving-done.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ...config import LoadCellConfig, SpecimenConfig
from ..clock import SimClock

#: Longest integration step (process seconds): the resolution of the settle timing.
MAX_STEP_S = 0.05
#: Largest change of the load-control loop's error per step, as a fraction of its band.
LOOP_STEP_FRACTION = 0.2


class LabelledEnum(IntEnum):
    """An enum whose members read as short operator labels ("FORCE_LIMIT" -> "Force limit")."""

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @classmethod
    def labels(cls) -> tuple[str, ...]:
        return tuple(member.label for member in cls)

    @classmethod
    def from_label(cls, label: str) -> LabelledEnum:
        for member in cls:
            if member.label == label:
                return member
        raise ValueError(f"{label!r} is not one of {', '.join(cls.labels())}")


class LoadingMode(LabelledEnum):
    """Which way positive force and extension point (the controller's 'mode')."""

    COMPRESSION = 0
    TENSION = 1

    @property
    def sign(self) -> int:
        """Factor from the tension-positive frame to this mode's frame."""
        return 1 if self is LoadingMode.TENSION else -1


class ControlMode(LabelledEnum):
    """What a move drives to: a force (load control) or a crosshead position."""

    LOAD = 0
    EXTENSION = 1


class SpecimenCondition(LabelledEnum):
    INTACT = 0
    YIELDED = 1
    FAILED = 2


class FrameAlarm(LabelledEnum):
    """Latched alarms: each one stopped the motor and stays until cleared."""

    NO_ALARM = 0
    FORCE_LIMIT = 1
    SPECIMEN_FAILED = 2
    TRAVEL_LIMIT = 3


class LoadFrameRefused(ValueError):
    """A command the controller refuses; the message names the value, the range and the fix."""


@dataclass(frozen=True)
class LoadFrameState:
    """One consistent snapshot of the frame, in the loading mode's frame unless named physical.

    ``force_n`` is the true (noise-free) force; the camera deforms the phantom with
    ``specimen_displacement_mm`` (physical: negative = shortened) and ``specimen``.
    """

    time_s: float
    mode: LoadingMode
    control: ControlMode
    force_n: float
    extension_mm: float
    specimen_displacement_mm: float
    specimen: SpecimenCondition
    peak_force_n: float
    moving: bool
    done: bool
    holding: bool
    alarm: FrameAlarm
    alarm_message: str


class BoneSpecimen:
    """Mouse tibia/femur under axial load, same in tension and compression.

    Elastic response: linear stiffness, then linear hardening after yield (return
    mapping, so unloading is elastic and leaves a permanent set). Measured force:
    quasi-linear viscoelastic, one Prony term, F = (1-g) F_e + g z with
    z = integral exp(-(t-s)/tau) dF_e(s), so a held extension relaxes the force by the
    fraction g with time constant tau. Brittle failure once |F| reaches failure_force_n.
    """

    def __init__(self, config: SpecimenConfig) -> None:
        self.stiffness = config.stiffness_n_per_mm
        self.yield_force = config.yield_force_n
        self.failure_force = config.failure_force_n
        alpha = config.post_yield_stiffness_fraction
        # Plastic (hardening) modulus that gives a post-yield tangent of alpha * k.
        self.hardening_modulus = math.inf if alpha >= 1 else alpha * self.stiffness / (1 - alpha)
        self.relax_fraction = config.relaxation_fraction
        self.relax_time = config.relaxation_time_s
        self.displacement_mm = 0.0
        self.plastic_mm = 0.0
        self.accumulated_plastic_mm = 0.0
        self.elastic_force = 0.0
        self.relaxing_force = 0.0
        self.force_n = 0.0
        self.peak_force_n = 0.0
        self.state = SpecimenCondition.INTACT

    def deform(self, displacement_mm: float, duration_s: float) -> float:
        """Move linearly to ``displacement_mm`` over ``duration_s`` process seconds; the new force."""
        if self.state is SpecimenCondition.FAILED:
            self.displacement_mm = displacement_mm
            return self.force_n
        previous_elastic = self.elastic_force
        self.displacement_mm = displacement_mm
        self.elastic_force = self._elastic_response(displacement_mm)
        decay = math.exp(-duration_s / self.relax_time)
        # Exact for an elastic force that changes linearly over the step.
        ramp_weight = 1.0 if duration_s <= 0 else self.relax_time / duration_s * (1.0 - decay)
        self.relaxing_force = decay * self.relaxing_force + ramp_weight * (self.elastic_force - previous_elastic)
        force = (1 - self.relax_fraction) * self.elastic_force + self.relax_fraction * self.relaxing_force
        self.peak_force_n = max(self.peak_force_n, abs(force))
        if abs(force) >= self.failure_force:
            self.state = SpecimenCondition.FAILED
            force = 0.0
        self.force_n = force
        return force

    def _elastic_response(self, displacement_mm: float) -> float:
        """Rate-independent elastic-plastic force (N); yields and hardens past yield_force."""
        trial = self.stiffness * (displacement_mm - self.plastic_mm)
        if math.isinf(self.hardening_modulus):  # post-yield stiffness = stiffness: yield changes nothing
            return trial
        excess = abs(trial) - (self.yield_force + self.hardening_modulus * self.accumulated_plastic_mm)
        if excess <= 0:
            return trial
        flow = excess / (self.stiffness + self.hardening_modulus)
        direction = math.copysign(1.0, trial)
        self.plastic_mm += direction * flow
        self.accumulated_plastic_mm += flow
        self.state = SpecimenCondition.YIELDED
        return trial - direction * self.stiffness * flow

    def relaxation_rate(self) -> float:
        """d(force)/dt at a held extension (N per process second)."""
        if self.state is SpecimenCondition.FAILED:
            return 0.0
        return -self.relax_fraction * self.relaxing_force / self.relax_time


class LoadFrameModel:
    """Crosshead, load cell and Deben-style controller with a bone specimen mounted.

    A move (``start``) drives the crosshead at the set speed to an extension target,
    or, in load control, runs a P-loop on the force that keeps holding the target
    (correcting stress relaxation) until stopped. ``done`` (DMOV) is set once the motor
    has stopped and the force has stayed within ``stable_band_n`` (of the load target,
    or of where it settled) for ``stable_time_s``. Exceeding the force limit, a
    specimen failure or the end of travel stop the motor and latch an alarm.
    """

    def __init__(self, config: LoadCellConfig, specimen: SpecimenConfig, clock: SimClock, seed: int = 0) -> None:
        self.config = config
        self.specimen_config = specimen
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        # The camera may ask for the state from another thread than the IOC's loop.
        self._lock = threading.RLock()
        self.specimen = BoneSpecimen(specimen)
        self.mode = LoadingMode.COMPRESSION
        self.control = ControlMode.LOAD
        self.speed_mm_per_min = config.speed_default_mm_per_min
        self.force_limit_n = config.force_limit_default_n
        self.alarm = FrameAlarm.NO_ALARM
        self.alarm_message = ""
        self._position_mm = 0.0
        self._seat_mm = 0.0
        self._loop: ControlMode | None = None
        self._target = 0.0
        self._running = False
        self._move_active = False
        self._settled_since = 0.0
        self._settle_anchor = 0.0
        self._band = config.stable_band_n
        self._t = clock.process_now()

    # ---- state --------------------------------------------------------------------

    def update(self) -> LoadFrameState:
        """Advance to the clock's present process time and return the snapshot."""
        with self._lock:
            self._advance_to(self.clock.process_now())
            return self._snapshot()

    def state(self) -> LoadFrameState:
        """Cheap current state for other simulated devices (the camera's phantom)."""
        return self.update()

    def force_at(self, time_s: float | None = None) -> float:
        """True force (N, mode frame) at real clock time ``time_s`` (default: now).

        The model advances to that time when it is later than its last update; an
        earlier time reads the latest state (loading is slow beside a camera frame).
        """
        now = self.clock.now()
        with self._lock:
            self._advance_to(self.clock.to_process(now if time_s is None else min(time_s, now)))
            return self.mode.sign * self.specimen.force_n

    def measure_force(self) -> float:
        """One load-cell reading: the true force plus seeded Gaussian noise (N, mode frame)."""
        with self._lock:
            noise = self.specimen_config.force_noise_n * self._rng.standard_normal()
            return self.mode.sign * self.specimen.force_n + noise

    def extension_range(self) -> tuple[float, float]:
        """Allowed extension targets (mm) in the present mode's frame."""
        low, high = self.config.extension_min_mm, self.config.extension_max_mm
        return (low, high) if self.mode is LoadingMode.TENSION else (-high, -low)

    def is_quiet(self, real_horizon_s: float) -> bool:
        """True when nothing moves and the force drifts less than half the stable band over the horizon."""
        with self._lock:
            if self._running or self._move_active:
                return False
            drift = abs(self.specimen.relaxation_rate()) * self.clock.to_process(real_horizon_s)
            return drift < self._band / 2

    def _snapshot(self) -> LoadFrameState:
        sign = self.mode.sign
        return LoadFrameState(
            time_s=self._t,
            mode=self.mode,
            control=self.control,
            force_n=0.0 + sign * self.specimen.force_n,  # 0.0 + turns -0.0 into 0.0
            extension_mm=0.0 + sign * self._position_mm,
            specimen_displacement_mm=self.specimen.displacement_mm,
            specimen=self.specimen.state,
            peak_force_n=self.specimen.peak_force_n,
            moving=self._running,
            done=not self._move_active,
            holding=self._loop is ControlMode.LOAD,
            alarm=self.alarm,
            alarm_message=self.alarm_message,
        )

    # ---- commands -----------------------------------------------------------------

    def start(self, control: ControlMode, target: float) -> None:
        """Begin a move to ``target`` (N in load control, mm in extension control, mode frame)."""
        with self._lock:
            self._advance_to(self.clock.process_now())
            if self.alarm is not FrameAlarm.NO_ALARM:
                raise LoadFrameRefused(
                    f"move refused: the {self.alarm.label.lower()} alarm is latched ({self.alarm_message}); "
                    "clear it (ALM_CLR) first"
                )
            if control is ControlMode.LOAD:
                self._check_load_target(target)
            else:
                self._check_extension_target(target)
            self.control = control
            self._target = self.mode.sign * target
            self._loop = control
            self._move_active = True
            self._running = control is ControlMode.EXTENSION or abs(self._load_error()) > self._band / 4
            self._restart_settling()

    def _check_load_target(self, target: float) -> None:
        if self.specimen.state is SpecimenCondition.FAILED:
            raise LoadFrameRefused(
                f"load target {target:g} N refused: the specimen has failed and carries no load; "
                "mount a new specimen (MOUNT) or use extension control"
            )
        if abs(target) > self.force_limit_n:
            raise LoadFrameRefused(
                f"load target {target:g} N is beyond the force limit: allowed -{self.force_limit_n:g} .. "
                f"{self.force_limit_n:g} N; lower the target or raise the force limit (FORCE_LIM, at most "
                f"the cell capacity {self.config.force_capacity_n:g} N)"
            )

    def _check_extension_target(self, target: float) -> None:
        low, high = self.extension_range()
        if not low <= target <= high:
            raise LoadFrameRefused(
                f"extension target {target:g} mm is outside the travel range {low:g} .. {high:g} mm "
                f"({self.mode.label.lower()} mode)"
            )

    def stop(self) -> None:
        """Stop the crosshead and end any load hold; the move is done (no alarm)."""
        with self._lock:
            self._advance_to(self.clock.process_now())
            self._halt()

    def set_mode(self, mode: LoadingMode) -> None:
        """Change the sign convention; refused while a move or a load hold is active."""
        with self._lock:
            self._advance_to(self.clock.process_now())
            if mode is not self.mode and (self._move_active or self._loop is not None):
                raise LoadFrameRefused(
                    f"loading mode cannot change to {mode.label} while the frame is moving or holding a load; "
                    "STOP first"
                )
            self.mode = mode

    def set_control(self, control: ControlMode) -> None:
        """Choose load or extension control for the next GO; ends a load hold (position is kept)."""
        with self._lock:
            self._advance_to(self.clock.process_now())
            if control is self.control:
                return
            if self._move_active:
                raise LoadFrameRefused(
                    f"control mode cannot change to {control.label} during a move; wait for DMOV=1 or STOP first"
                )
            self._halt()
            self.control = control

    def set_speed(self, speed_mm_per_min: float) -> None:
        """Crosshead speed (mm/min); applies at once, also to a move in progress."""
        low, high = self.config.speed_min_mm_per_min, self.config.speed_max_mm_per_min
        if not low <= speed_mm_per_min <= high:
            raise LoadFrameRefused(
                f"speed {speed_mm_per_min:g} mm/min is outside the allowed range {low:g} .. {high:g} mm/min"
            )
        with self._lock:
            self._advance_to(self.clock.process_now())
            self.speed_mm_per_min = speed_mm_per_min

    def set_force_limit(self, limit_n: float) -> None:
        """Largest |force| (N) the motor may drive to; above it the motor stops with an alarm."""
        capacity = self.config.force_capacity_n
        if not 0 < limit_n <= capacity:
            raise LoadFrameRefused(
                f"force limit {limit_n:g} N is outside the allowed range: above 0 and at most the cell "
                f"capacity {capacity:g} N"
            )
        with self._lock:
            self._advance_to(self.clock.process_now())
            self.force_limit_n = limit_n

    def clear_alarm(self) -> None:
        """Acknowledge the latched alarm; the next move may start."""
        with self._lock:
            self.alarm = FrameAlarm.NO_ALARM
            self.alarm_message = ""

    def mount_specimen(self) -> None:
        """Replace the specimen with a fresh one seated, unloaded, at the present crosshead position."""
        with self._lock:
            self._advance_to(self.clock.process_now())
            if self._move_active or self._loop is not None:
                raise LoadFrameRefused("a specimen cannot be mounted while the frame is moving or holding; STOP first")
            self.specimen = BoneSpecimen(self.specimen_config)
            self._seat_mm = self._position_mm
            if self.alarm is FrameAlarm.SPECIMEN_FAILED:
                self.clear_alarm()

    # ---- integration --------------------------------------------------------------

    def _advance_to(self, t: float) -> None:
        if t <= self._t:
            return
        if self._loop is None and not self._move_active:
            # Nothing drives the crosshead: relaxation has an exact solution.
            self.specimen.deform(self.specimen.displacement_mm, t - self._t)
            self._t = t
            return
        # While the crosshead runs, one step may change the load-control error by only a
        # fraction of its band, so the loop stays stable at any stiffness and speed.
        loop_rate = self.specimen.stiffness * self.speed_mm_per_min / 60.0
        running_step = min(MAX_STEP_S, LOOP_STEP_FRACTION * self.config.load_control_band_n / loop_rate)
        while self._t < t:
            step = min(running_step if self._running else MAX_STEP_S, t - self._t)
            self._step(step)
            self._t += step

    def _step(self, dt: float) -> None:
        """One integration step: crosshead, specimen, protections, settle timing."""
        velocity = self._command_velocity()
        run_s = dt
        new_position = self._position_mm + velocity * dt
        if self._loop is ControlMode.EXTENSION and abs(self._target - self._position_mm) <= abs(velocity) * dt:
            run_s = abs(self._target - self._position_mm) / abs(velocity)
            new_position = self._target
        low, high = self.config.extension_min_mm, self.config.extension_max_mm
        end_of_travel = not low <= new_position <= high
        if end_of_travel:
            new_position = min(max(new_position, low), high)
            run_s = abs(new_position - self._position_mm) / abs(velocity)
        self._position_mm = new_position
        was_intact = self.specimen.state is not SpecimenCondition.FAILED
        force = self.specimen.deform(self._position_mm - self._seat_mm, run_s)
        if dt > run_s:
            force = self.specimen.deform(self._position_mm - self._seat_mm, dt - run_s)
        moved = velocity != 0.0 and run_s > 0
        if self._loop is ControlMode.EXTENSION and self._position_mm == self._target:
            self._loop = None
            self._running = False
        if was_intact and self.specimen.state is SpecimenCondition.FAILED:
            self._trip(FrameAlarm.SPECIMEN_FAILED, self._failure_message())
        elif moved and abs(force) > self.force_limit_n and velocity * force > 0:
            self._trip(FrameAlarm.FORCE_LIMIT, self._force_limit_message(force))
        elif end_of_travel:
            self._trip(FrameAlarm.TRAVEL_LIMIT, self._travel_message())
        elif self._move_active:
            self._track_settling(moved, force, self._t + dt)

    def _command_velocity(self) -> float:
        """Crosshead velocity (mm per process second, physical) the controller asks for."""
        speed = self.speed_mm_per_min / 60.0
        if self._loop is ControlMode.EXTENSION:
            return math.copysign(speed, self._target - self._position_mm) if self._running else 0.0
        if self._loop is ControlMode.LOAD:
            error = self._load_error()
            if self._running and abs(error) < self._band / 4:
                self._running = False
            elif not self._running and abs(error) > self._band / 2:
                self._running = True
            if self._running:
                return speed * max(-1.0, min(1.0, error / self.config.load_control_band_n))
        return 0.0

    def _load_error(self) -> float:
        return self._target - self.specimen.force_n if self._loop is ControlMode.LOAD else 0.0

    def _restart_settling(self) -> None:
        self._settled_since = self._t
        self._settle_anchor = self.specimen.force_n

    def _track_settling(self, moved: bool, force: float, t: float) -> None:
        """DMOV rule: motor stopped and force within the band for stable_time_s."""
        if self.control is ControlMode.LOAD:
            steady = abs(force - self._target) <= self._band
        else:
            steady = not moved and abs(force - self._settle_anchor) <= self._band
        if not steady:
            self._settled_since = t
            self._settle_anchor = force
        elif not self._running and t - self._settled_since >= self.config.stable_time_s:
            self._move_active = False

    def _halt(self) -> None:
        self._loop = None
        self._running = False
        self._move_active = False

    def _trip(self, alarm: FrameAlarm, message: str) -> None:
        self._halt()
        self.alarm = alarm
        self.alarm_message = message

    def _failure_message(self) -> str:
        sign = self.mode.sign
        return (
            f"specimen failed at {self.specimen.peak_force_n:.2f} N, extension {sign * self._position_mm:.4f} mm: "
            "the force dropped to 0 N and the motor stopped; mount a new specimen (MOUNT)"
        )

    def _force_limit_message(self, force: float) -> str:
        return (
            f"force limit tripped: {self.mode.sign * force:.3f} N exceeded the limit {self.force_limit_n:g} N; "
            "motor stopped. Clear the alarm (ALM_CLR) and move to a lower load"
        )

    def _travel_message(self) -> str:
        low, high = self.extension_range()
        return (
            f"travel limit: the crosshead reached {self.mode.sign * self._position_mm:g} mm, the end of its "
            f"range {low:g} .. {high:g} mm, before the target was reached; motor stopped"
        )
