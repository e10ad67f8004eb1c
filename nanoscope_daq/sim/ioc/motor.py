"""A simulated EPICS motor record (caproto) driving an :class:`Axis`.

Stock ``ophyd.EpicsMotor`` works unchanged: every VAL put pulses DMOV 1->0->1 (a
zero-length move too), VAL's control limits follow HLM/LLM, a put outside them is
refused by the IOC as well (LVIO=1, an alarm on the record, DMOV pulsed so no client
waits forever, and the put fails with the reason). While the axis moves, one asyncio
task publishes RBV/DRBV/RRBV/REP at ``UPDATE_RATE_HZ``; while it rests nothing runs.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import time
from typing import NoReturn

from caproto import AlarmSeverity, AlarmStatus
from caproto.server import PVGroup, PvpropertyDouble, pvproperty
from caproto.server.records import MotorFields

from ..models.motion import Axis, LimitViolation

# Readback publication rate while moving (a real controller's encoder polling rate).
UPDATE_RATE_HZ = 200.0
RAW_RANGE = 2**32  # RRBV/REP are 32-bit counters and wrap like one


class MotorStatus(enum.IntFlag):
    """The bits of the record's MSTA field this simulation sets (motor record documentation)."""

    DIRECTION = 1 << 0  # last motion in the positive (dial) direction
    DONE = 1 << 1
    POSITION = 1 << 5  # closed-loop position control
    PRESENT = 1 << 8  # encoder present
    MOVING = 1 << 10
    HOMED = 1 << 14


async def _show(field, value, **metadata) -> None:
    """Write a field as the record itself does: no putter, and no analog-alarm check (the
    fields of a record share one alarm, which caproto's check would reset on every write)."""
    await field.write(value, verify_value=False, **metadata)


class MoveRefused(ValueError):
    """A VAL (or jog, tweak, home) put the record will not act on; the put fails with this text."""


class PutterCheckedDouble(PvpropertyDouble):
    """A double whose control limits are published for clients but checked by the record's
    putter (VAL: to flag LVIO and pulse DMOV; VELO/JVEL: to name VMAX in the error), so
    caproto's generic limit check must not refuse the put first."""

    async def verify_value(self, value):
        return await self.putter(self, value)


def _handled(field: str, handler: str, *, checked_by_putter: bool = False) -> pvproperty:
    """A copy of MotorFields' ``field`` whose puts go to ``MotorRecordIOC.<handler>(value)``."""

    async def put(fields, instance, value):
        return await getattr(fields.parent.group, handler)(value)

    prop = copy.copy(getattr(MotorFields, field))
    if checked_by_putter:
        prop.pvspec = prop.pvspec._replace(dtype=PutterCheckedDouble)
    return prop.putter(put)


class SimMotorFields(MotorFields):
    """Motor record fields; puts that act on the axis are routed to the IOC. RTYP stays 'motor'."""

    velocity = _handled("velocity", "put_velocity", checked_by_putter=True)
    max_velocity = _handled("max_velocity", "put_max_velocity")
    seconds_to_velocity = _handled("seconds_to_velocity", "put_acceleration")
    jog_velocity = _handled("jog_velocity", "put_jog_velocity", checked_by_putter=True)
    jog_motor_forward = _handled("jog_motor_forward", "put_jog_forward")
    jog_motor_reverse = _handled("jog_motor_reverse", "put_jog_reverse")
    stop = _handled("stop", "put_stop")
    stop_pause_move_go = _handled("stop_pause_move_go", "put_spmg")
    user_high_limit = _handled("user_high_limit", "put_high_limit")
    user_low_limit = _handled("user_low_limit", "put_low_limit")
    dial_high_limit = _handled("dial_high_limit", "put_dial_high_limit")
    dial_low_limit = _handled("dial_low_limit", "put_dial_low_limit")
    user_offset = _handled("user_offset", "put_offset")
    user_direction = _handled("user_direction", "put_direction")
    motor_step_size = _handled("motor_step_size", "put_resolution")
    display_precision = _handled("display_precision", "put_precision")
    engineering_units = _handled("engineering_units", "put_units")
    dial_desired_value = _handled("dial_desired_value", "put_dial_value")
    raw_desired_value = _handled("raw_desired_value", "put_raw_value")
    relative_value = _handled("relative_value", "put_relative")
    tweak_motor_forward = _handled("tweak_motor_forward", "put_tweak_forward")
    tweak_motor_reverse = _handled("tweak_motor_reverse", "put_tweak_reverse")
    home_forward = _handled("home_forward", "put_home")
    home_reverse = _handled("home_reverse", "put_home")

    async def value_write_hook(self, instance, value):
        """VAL changed (by a client or the record): keep DVAL and RVAL consistent."""
        await self.parent.group.setpoint_written(value)


# Fields carrying a position, which get the axis' units and precision.
_POSITION_FIELDS = (
    "user_readback_value", "dial_readback_value", "dial_desired_value", "user_high_limit", "user_low_limit",
    "dial_high_limit", "dial_low_limit", "user_offset", "relative_value", "tweak_step_size",
    "difference_dval_drbv", "velocity", "max_velocity", "jog_velocity", "home_velocity",
)


class MotorRecordIOC(PVGroup):
    """One axis as an EPICS motor record (the record PV is exactly the prefix)."""

    standard_interface = "EPICS motor record (stock `ophyd.EpicsMotor`)"

    motor = pvproperty(
        value=0.0, name="", dtype=PutterCheckedDouble, record=SimMotorFields, doc="User desired value (VAL)"
    )

    def __init__(self, prefix: str, axis: Axis, **kwargs) -> None:
        super().__init__(prefix, **kwargs)
        self.axis = axis
        self._motion_task: asyncio.Task | None = None
        self._requests = 0
        self._jog_direction = 0
        self._homing = False
        self._held = False  # a move waits for SPMG=Go/Move
        self._offset_changed = False
        self._homed = False

    @property
    def fields(self) -> SimMotorFields:
        return self.motor.field_inst

    # -- startup -----------------------------------------------------------------

    async def initialize(self) -> None:
        """Write the configured units, precision, speeds and limits before clients connect."""
        cfg, f = self.axis.config, self.fields
        await self.put_units(cfg.egu)
        await self.put_precision(cfg.precision)
        for field, value in (
            (f.description, cfg.description),
            (f.engineering_units, cfg.egu),
            (f.display_precision, cfg.precision),
            (f.motor_step_size, self.axis.resolution),
            (f.encoder_step_size, self.axis.resolution),
            (f.readback_step_size, self.axis.resolution),
            (f.max_velocity, self.axis.max_velocity),
            (f.velocity, self.axis.velocity),
            (f.jog_velocity, self.axis.jog_velocity),
            (f.home_velocity, self.axis.velocity),
            (f.seconds_to_velocity, self.axis.acceleration),
            (f.base_velocity, 0.0),
            (f.use_encoder_if_present, "Yes"),
            (f.hw_limit_violation_svr, "MAJOR"),
            (f.done_moving_to_value, 1),
            (f.motor_is_moving, 0),
        ):
            await _show(field, value)
        await self._publish_limits()
        await self._publish_speed_limits()
        await self._publish_position(self.axis.clock.now(), time.time())
        await _show(self.motor, self.axis.target)
        await self._publish_status(moving=False)

    # -- motion ------------------------------------------------------------------

    async def _request(self, start_motion, *, move_value: float | None = None) -> None:
        """Run ``start_motion()`` (which starts, retargets or raises to refuse) and follow the motion."""
        f = self.fields
        was_done = f.done_moving_to_value.value == 1
        try:
            start_motion()
        except (ValueError, RuntimeError) as exc:
            await self._refuse(move_value, exc, was_done)
        self._requests += 1
        await self._clear_alarm()
        if f.limit_violation.value:
            await _show(f.limit_violation, 0)
        if was_done:
            await _show(f.done_moving_to_value, 0)
        self._ensure_motion_task()

    def _halt(self) -> None:
        """Decelerate to rest and let the motion task finish whatever was in progress."""
        self.axis.stop()
        self._requests += 1
        self._ensure_motion_task()

    async def _refuse(self, value: float | None, exc: Exception, was_done: bool) -> NoReturn:
        """Refuse a move: LVIO=1 for limits, an alarm, DMOV pulsed if idle, the put fails."""
        f = self.fields
        if isinstance(exc, LimitViolation) and value is not None:
            await _show(f.limit_violation, 1)
            status = AlarmStatus.HIGH if value > self.axis.user_limits[1] else AlarmStatus.LOW
        else:
            status = AlarmStatus.STATE
        severity = AlarmSeverity(f.hw_limit_violation_svr.enum_strings.index(f.hw_limit_violation_svr.value))
        # The readback carries the alarm first: ophyd checks its severity when DMOV returns to 1.
        await _show(f.user_readback_value, f.user_readback_value.value, status=status, severity=severity)
        if was_done:
            await _show(f.done_moving_to_value, 0)
            await _show(f.done_moving_to_value, 1)
        raise MoveRefused(f"{self.motor.pvname}: {exc}") from None

    async def _clear_alarm(self) -> None:
        """An accepted request ends the alarm of a refused one (readback and record)."""
        f = self.fields
        if f.user_readback_value.alarm.severity != AlarmSeverity.NO_ALARM:
            await _show(f.user_readback_value, f.user_readback_value.value, status=0, severity=0)
        if self.motor.alarm.severity != AlarmSeverity.NO_ALARM:
            await self.motor.alarm.write(status=0, severity=0)

    def _ensure_motion_task(self) -> None:
        """Start the task that follows the motion, unless it runs already."""
        if self._motion_task is None:
            self._motion_task = asyncio.get_running_loop().create_task(self._follow_motion())

    async def _follow_motion(self) -> None:
        """Publish the readbacks while the axis moves; when it rests (and nothing new was asked), finish."""
        period = 1.0 / UPDATE_RATE_HZ
        clock = self.axis.clock
        next_tick = clock.now()
        while True:
            seen = self._requests
            t, wall = clock.now(), time.time()
            moving = self.axis.is_moving(t)
            await self._publish_position(t, wall)
            await self._publish_status(moving=moving, velocity=self.axis.velocity_at(t))
            if moving:
                # A fixed schedule (no drift), never a burst after a stall; wake when the move ends.
                next_tick = max(next_tick + period, clock.now())
                await asyncio.sleep(max(min(next_tick, self.axis.move_done_at()) - clock.now(), 0.0))
                continue
            complete = await self._finish_motion()
            if self._requests != seen:
                continue  # asked something new meanwhile: follow that
            await self._publish_status(moving=False)
            if self._requests != seen:
                continue
            # Done, and no await from here until DMOV's value is set: a request arriving
            # later sees no task, starts a new one and writes DMOV=0 after this DMOV=1.
            self._motion_task = None
            if complete and self.fields.done_moving_to_value.value == 0:
                await _show(self.fields.done_moving_to_value, 1)
            return

    async def _finish_motion(self) -> bool:
        """At rest: VAL becomes where the axis stopped (after STOP, jog, home), command fields
        reset; False while a held move waits for SPMG=Go/Move (DMOV stays 0)."""
        f = self.fields
        if self._offset_changed:
            # After the VAL event of the SET put: ophyd re-reads VAL's limits on an HLM/LLM
            # event, and a VAL event queued after that would restore its stale copy of them.
            self._offset_changed = False
            await _show(f.user_offset, self.axis.offset)
            await self._publish_limits()
        if self._held:
            return False
        if self.motor.value != self.axis.target:
            await _show(self.motor, self.axis.target)
        await self._end_jog()
        await self._end_homing(completed=True)
        if f.stop_pause_move_go.value == "Move":
            await _show(f.stop_pause_move_go, "Pause")
        return True

    async def _end_jog(self) -> None:
        """No jog (any more): JOGF/JOGR read 0."""
        self._jog_direction = 0
        for field in (self.fields.jog_motor_forward, self.fields.jog_motor_reverse):
            if field.value:
                await _show(field, 0)

    async def _end_homing(self, *, completed: bool) -> None:
        """No homing (any more): HOMF/HOMR read 0; a completed one sets ATHM (and MSTA's HOMED)."""
        if self._homing and completed:
            self._homed = self.axis.dial_position_at(self.axis.clock.now()) == 0.0
            await _show(self.fields.at_home, int(self._homed))
        self._homing = False
        for field in (self.fields.home_forward, self.fields.home_reverse):
            if field.value:
                await _show(field, 0)

    def _raw(self, dial: float) -> int:
        """Dial position in steps, as a 32-bit counter."""
        return (round(dial / self.axis.resolution) + RAW_RANGE // 2) % RAW_RANGE - RAW_RANGE // 2

    async def _publish_position(self, t: float, wall: float) -> None:
        """The encoder readbacks at clock time ``t`` (stamped with wall time ``wall``)."""
        f, axis = self.fields, self.axis
        steps = round(axis.dial_position_at(t) / axis.resolution)
        dial = steps * axis.resolution
        raw = self._raw(dial)
        await _show(f.user_readback_value, axis.to_user(dial), timestamp=wall)
        await _show(f.dial_readback_value, dial, timestamp=wall)
        await _show(f.raw_readback_value, raw, timestamp=wall)
        await _show(f.raw_encoder_position, raw, timestamp=wall)
        await _show(f.raw_motor_position, raw, timestamp=wall)

    async def _publish_status(self, *, moving: bool, velocity: float = 0.0) -> None:
        """MOVN, TDIR and MSTA, each written only when it changes."""
        f = self.fields
        dial_velocity = velocity * self.axis.direction
        direction = int(dial_velocity > 0) if dial_velocity else f.direction_of_travel.value
        msta = MotorStatus.POSITION | MotorStatus.PRESENT
        msta |= MotorStatus.MOVING if moving else MotorStatus.DONE
        if direction:
            msta |= MotorStatus.DIRECTION
        if self._homed:
            msta |= MotorStatus.HOMED
        for field, value in ((f.motor_is_moving, int(moving)), (f.direction_of_travel, direction),
                             (f.motor_status, int(msta))):
            if field.value != value:
                await _show(field, value)

    def _require_go(self) -> None:
        if self.fields.stop_pause_move_go.value == "Stop":
            raise RuntimeError("motion is disabled (SPMG=Stop); set SPMG to Go to move")

    @property
    def _pausing(self) -> bool:
        return self.fields.stop_pause_move_go.value == "Pause"

    # -- VAL and the other move requests ------------------------------------------

    @motor.putter
    async def motor(self, instance, value):
        value = float(value)
        if self.fields.set_use_switch.value == "Set":
            await self._redefine_position(value)
            return value

        def start() -> None:
            self._require_go()
            self.axis.check_target(value)
            self._jog_direction, self._homing = 0, False
            if self._pausing:
                self._held = True
            else:
                self.axis.move(value)

        await self._request(start, move_value=value)
        await self._end_jog()
        await self._end_homing(completed=False)
        return value

    async def _redefine_position(self, value: float) -> None:
        """SET mode: the current position becomes ``value``, without motion.

        FOFF=Variable changes OFF (user limits shift with it); FOFF=Frozen changes the dial.
        DMOV does not pulse: ophyd's set_current_position does not wait for it, and a late
        DMOV=1 would complete the status of the next move before that move ran.
        """
        try:
            if self.fields.offset_freeze_switch.value == "Frozen":
                self.axis.set_dial_position(self.axis.to_dial(value))
            else:
                self.axis.set_position(value)
        except RuntimeError as exc:
            raise MoveRefused(f"{self.motor.pvname}: {exc}") from None
        self._offset_changed = True  # published by the motion task, after this VAL event
        self._requests += 1
        self._ensure_motion_task()

    async def setpoint_written(self, value: float) -> None:
        """VAL changed: DVAL, RVAL and LVAL follow."""
        f, dial = self.fields, self.axis.to_dial(value)
        await _show(f.dial_desired_value, dial)
        await _show(f.raw_desired_value, self._raw(dial))
        await _show(f.last_user_des_val, value)

    async def _move_by(self, delta: float) -> None:
        await self.motor.write(self.motor.value + delta)

    async def put_dial_value(self, value: float) -> float:
        await self.motor.write(self.axis.to_user(value))
        return value

    async def put_raw_value(self, value: int) -> int:
        await self.motor.write(self.axis.to_user(value * self.axis.resolution))
        return value

    async def put_relative(self, value: float) -> float:
        await self._move_by(value)
        return 0.0

    async def put_tweak_forward(self, value: int) -> int:
        if value:
            await self._move_by(self.fields.tweak_step_size.value)
        return 0

    async def put_tweak_reverse(self, value: int) -> int:
        if value:
            await self._move_by(-self.fields.tweak_step_size.value)
        return 0

    async def put_home(self, value: int) -> int:
        """HOMF/HOMR: travel to the home switch, which sits at dial position 0."""
        if not value:
            return 0

        def start() -> None:
            self._require_go()
            if self._pausing:
                raise RuntimeError("motion is paused (SPMG=Pause); set SPMG to Go to home")
            self.axis.move(self.axis.to_user(0.0))
            self._jog_direction, self._homing = 0, True

        await self._request(start)
        await self._end_jog()
        return value

    async def _jog(self, direction: int, value: int) -> int:
        if not value:
            if self._jog_direction == direction:
                self._halt()
            return 0

        def start() -> None:
            self._require_go()
            if self._pausing:
                raise RuntimeError("motion is paused (SPMG=Pause); set SPMG to Go to jog")
            self.axis.jog(direction)
            self._jog_direction, self._homing = direction, False

        await self._request(start)
        await self._end_homing(completed=False)
        other = self.fields.jog_motor_reverse if direction > 0 else self.fields.jog_motor_forward
        await _show(other, 0)
        return 1

    async def put_jog_forward(self, value: int) -> int:
        return await self._jog(+1, value)

    async def put_jog_reverse(self, value: int) -> int:
        return await self._jog(-1, value)

    async def put_stop(self, value: int) -> int:
        """STOP: decelerate to rest; VAL becomes where the axis stopped; a held move is dropped."""
        if value:
            self._held = False
            self._halt()
        return 0

    async def put_spmg(self, value: str) -> str:
        """Stop: halt and refuse moves. Pause: halt, hold the target. Move (once) / Go: resume it."""
        if value == "Stop":
            self._held = False
            self._halt()
        elif value == "Pause":
            moving = self.fields.done_moving_to_value.value == 0
            self._held = self._held or (moving and not self._jog_direction and not self._homing)
            self._halt()
        elif self._held:
            self._held = False
            target = self.motor.value
            await self._request(lambda: self.axis.move(target), move_value=target)
        return value

    # -- speeds -------------------------------------------------------------------

    async def put_velocity(self, value: float) -> float:
        self.axis.velocity = value
        return value

    async def put_max_velocity(self, value: float) -> float:
        self.axis.max_velocity = value
        await self._publish_speed_limits()
        return value

    async def _publish_speed_limits(self) -> None:
        """VELO and JVEL may range up to VMAX (their control limits, as on the real record)."""
        for field in (self.fields.velocity, self.fields.jog_velocity):
            await field.write_metadata(lower_ctrl_limit=0.0, upper_ctrl_limit=self.axis.max_velocity)

    async def put_acceleration(self, value: float) -> float:
        self.axis.acceleration = value
        return value

    async def put_jog_velocity(self, value: float) -> float:
        """JVEL; a jog in progress changes speed smoothly, as on the real record."""
        self.axis.jog_velocity = value
        if self._jog_direction:
            self.axis.jog(self._jog_direction)
        return value

    # -- coordinates and limits --------------------------------------------------------

    async def _publish_limits(self, *, skip: str = "") -> None:
        """VAL's control limits first (ophyd re-reads them on an HLM/LLM event), then the fields."""
        f, axis = self.fields, self.axis
        low, high = axis.user_limits if axis.limits_enabled else (0.0, 0.0)
        await self.motor.write_metadata(
            lower_ctrl_limit=low, upper_ctrl_limit=high, lower_disp_limit=low, upper_disp_limit=high
        )
        dial_low, dial_high = axis.dial_limits
        for name, value in (
            ("user_low_limit", low), ("user_high_limit", high),
            ("dial_low_limit", dial_low), ("dial_high_limit", dial_high),
        ):
            if name != skip:
                await _show(getattr(f, name), value)

    def _set_user_limit(self, which: int, value: float) -> None:
        """Set the user low (0) or high (1) limit; with DIR=Neg it is the other dial limit."""
        dial = list(self.axis.dial_limits)
        dial[which if self.axis.direction > 0 else 1 - which] = self.axis.to_dial(value)
        self.axis.dial_limits = tuple(dial)

    async def put_high_limit(self, value: float) -> float:
        self._set_user_limit(1, value)
        await self._publish_limits(skip="user_high_limit")
        return value

    async def put_low_limit(self, value: float) -> float:
        self._set_user_limit(0, value)
        await self._publish_limits(skip="user_low_limit")
        return value

    async def put_dial_high_limit(self, value: float) -> float:
        self.axis.dial_limits = (self.axis.dial_limits[0], value)
        await self._publish_limits(skip="dial_high_limit")
        return value

    async def put_dial_low_limit(self, value: float) -> float:
        self.axis.dial_limits = (value, self.axis.dial_limits[1])
        await self._publish_limits(skip="dial_low_limit")
        return value

    async def _coordinates_changed(self) -> None:
        """OFF or DIR changed: VAL, RBV and then the user limits follow the fixed dial values."""
        await _show(self.motor, self.axis.to_user(self.fields.dial_desired_value.value))
        await self._publish_position(self.axis.clock.now(), time.time())
        await self._publish_limits()

    async def put_offset(self, value: float) -> float:
        self.axis.offset = value
        await self._coordinates_changed()
        return value

    async def put_direction(self, value: str) -> str:
        self.axis.direction = -1 if value == "Neg" else 1
        await self._coordinates_changed()
        return value

    async def put_resolution(self, value: float) -> float:
        if not value > 0:
            raise ValueError(f"MRES must be > 0 {self.axis.config.egu}/step, got {value}")
        self.axis.resolution = value
        await _show(self.fields.encoder_step_size, value)
        await self._publish_position(self.axis.clock.now(), time.time())
        return value

    async def put_precision(self, value: int) -> int:
        await self.motor.write_metadata(precision=value)
        for name in _POSITION_FIELDS:
            await getattr(self.fields, name).write_metadata(precision=value)
        return value

    async def put_units(self, value: str) -> str:
        await self.motor.write_metadata(units=value)
        for name in _POSITION_FIELDS:
            await getattr(self.fields, name).write_metadata(units=value if "velocity" not in name else f"{value}/s")
        return value
