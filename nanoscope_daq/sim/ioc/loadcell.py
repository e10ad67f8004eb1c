"""Channel Access interface of the simulated Deben-class loading stage (``<P>LOAD:``).

Set a target (FORCE in load control, EXT in extension control), the SPEED and the
force limit, then GO. DMOV drops to 0 on an accepted GO and returns to 1 once the
motor has stopped and the force is stable; in load control the frame keeps holding
the target (HOLDING=1) until STOP. Refused puts fail with the reason, which is also
posted on MSG (pyepics ignores put errors); MOVE_N counts accepted GOs so a client can
tell that its GO was refused. Readbacks update at 20 Hz while anything changes and
once a second when the frame is quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from caproto import AlarmSeverity, AlarmStatus
from caproto.server import PVGroup, pvproperty

from ..models.loadcell import (
    ControlMode,
    FrameAlarm,
    LoadFrameModel,
    LoadFrameRefused,
    LoadFrameState,
    LoadingMode,
    SpecimenCondition,
)
from .pvs import enum_pv, fixed_length, message_pv, readback, setpoint, wait_for_wake

#: Readback period while the crosshead moves or the force still changes (real s).
ACTIVE_PERIOD_S = 0.05
#: Readback period when the frame is quiet (real s).
IDLE_PERIOD_S = 1.0
FORCE_PRECISION = 3
EXTENSION_PRECISION = 4


def flag(name: str, doc: str) -> pvproperty:
    """A read-only 0/1 status, like the motor record's DMOV and MOVN."""
    return pvproperty(name=name, value=0, doc=doc, read_only=True, alarm_group=name)


def command(name: str, doc: str, action: str) -> pvproperty:
    """A momentary command: write 1 (or its label) to act; it reads Idle again."""
    return enum_pv(name, doc + f"; write 1 ({action}) to act, reads back Idle", ("Idle", action))


class LoadCellIOC(PVGroup):
    """Deben Microtest/CT5000-class in-situ loading stage with a mouse long bone mounted.

    Sign convention: in Compression mode force and extension read positive when the
    specimen is compressed (jaws closing), in Tension mode when it is stretched. Speeds
    and the stress relaxation run on process time (the simulator's time_scale).
    """

    force_rbv = readback(
        "FORCE_RBV",
        "Measured force (load cell, with noise); positive = the loading mode's direction; "
        "alarm HIHI/MAJOR while the force-limit alarm is latched",
        "N",
        FORCE_PRECISION,
    )
    extension_rbv = readback(
        "EXT_RBV",
        "Measured extension (crosshead travel from zero); positive = the loading mode's direction",
        "mm",
        EXTENSION_PRECISION,
    )
    peak_rbv = readback("PEAK_RBV", "Largest |force| the mounted specimen has carried", "N", FORCE_PRECISION)
    capacity_rbv = readback("CAP_RBV", "Load-cell capacity: the highest force limit allowed", "N", 1)
    mode = enum_pv(
        "MODE",
        "Loading mode (sign convention of force, extension and targets); refused while moving or holding",
        LoadingMode.labels(),
    )
    mode_rbv = enum_pv("MODE_RBV", "Loading mode in effect", LoadingMode.labels(), read_only=True)
    control = enum_pv(
        "CTRL",
        "Control mode of the next GO: Load drives to FORCE (and holds it), Extension drives to EXT; "
        "refused during a move, ends a load hold",
        ControlMode.labels(),
    )
    control_rbv = enum_pv("CTRL_RBV", "Control mode in effect", ControlMode.labels(), read_only=True)
    force_target = setpoint(
        "FORCE",
        "Load target for GO in Load control; GO refuses |FORCE| above FORCE_LIM_RBV "
        "(control limits: +- the cell capacity)",
        "N",
        FORCE_PRECISION,
    )
    extension_target = setpoint(
        "EXT",
        "Extension target for GO in Extension control (control limits: the travel range of the present mode, "
        "EXT_MIN_RBV .. EXT_MAX_RBV)",
        "mm",
        EXTENSION_PRECISION,
    )
    extension_min = readback("EXT_MIN_RBV", "Lowest extension target in the present mode", "mm", EXTENSION_PRECISION)
    extension_max = readback("EXT_MAX_RBV", "Highest extension target in the present mode", "mm", EXTENSION_PRECISION)
    speed = setpoint(
        "SPEED", "Crosshead speed set point (control limits: the allowed range); applies at once", "mm/min", 3
    )
    speed_rbv = readback("SPEED_RBV", "Crosshead speed in effect", "mm/min", 3)
    force_limit = setpoint(
        "FORCE_LIM",
        "Force limit: a move that drives |force| above it stops with the force-limit alarm "
        "(control limits: 0 .. the cell capacity; 0 is refused)",
        "N",
        2,
    )
    force_limit_rbv = readback("FORCE_LIM_RBV", "Force limit in effect", "N", 2)
    go = command(
        "GO",
        "Start a move to FORCE (Load control) or EXT (Extension control); refused while an alarm is latched, "
        "with a load target beyond the force limit or with a failed specimen in Load control",
        "Go",
    )
    stop = command("STOP", "Stop the crosshead and end a load hold; the move ends (DMOV=1)", "Stop")
    moving = flag("MOVN", "1 while the crosshead moves (also the holding corrections in Load control)")
    done = flag(
        "DMOV",
        "Move done: 0 from an accepted GO until the motor has stopped and the force has stayed within the "
        "stable band (of the load target in Load control) for the settle time",
    )
    holding = flag("HOLDING", "1 while the load-control loop holds FORCE (correcting stress relaxation)")
    moves_started = pvproperty(
        name="MOVE_N",
        value=0,
        read_only=True,
        alarm_group="MOVE_N",
        doc="Number of accepted GOs since the IOC started (a GO that leaves it unchanged was refused: see MSG)",
    )
    specimen = enum_pv(
        "SPEC_STATE",
        "Specimen state: Intact, Yielded (past its yield force) or Failed (broken, carries no load; "
        "MOUNT a new one)",
        SpecimenCondition.labels(),
        read_only=True,
    )
    mount = command(
        "MOUNT",
        "Mount a new specimen, unloaded, at the present crosshead position (clears a specimen-failed alarm); "
        "refused while moving or holding",
        "Mount",
    )
    alarm = enum_pv(
        "ALM",
        "Latched alarm that stopped the motor (severity MAJOR while latched); GO is refused until ALM_CLR",
        FrameAlarm.labels(),
        read_only=True,
    )
    alarm_message = message_pv("ALM_MSG", "Why the latched alarm tripped, with the values (empty when none)")
    alarm_clear = command("ALM_CLR", "Acknowledge and clear the latched alarm", "Clear")
    message = message_pv("MSG", "Last event or refusal, with its reason and the fix")

    def __init__(self, prefix: str, model: LoadFrameModel) -> None:
        super().__init__(prefix)
        self.model = model
        # Model commands and publishing take turns so no stale snapshot overwrites a newer one.
        self._turn = asyncio.Lock()
        self._wake = asyncio.Event()

    async def initialize(self) -> None:
        """Config-derived values and ranges, then every readback once."""
        model, cfg = self.model, self.model.config
        capacity = cfg.force_capacity_n
        await self.capacity_rbv.write(capacity)
        await self.force_target.write(0.0, verify_value=False, lower_ctrl_limit=-capacity,
                                      upper_ctrl_limit=capacity)
        await self.speed.write(model.speed_mm_per_min, verify_value=False,
                               lower_ctrl_limit=cfg.speed_min_mm_per_min, upper_ctrl_limit=cfg.speed_max_mm_per_min)
        await self.force_limit.write(model.force_limit_n, verify_value=False, lower_ctrl_limit=0.0,
                                     upper_ctrl_limit=capacity)
        await self.mode.write(model.mode.label, verify_value=False)
        await self.control.write(model.control.label, verify_value=False)
        await self.done.write(1)
        await self._publish_settings()
        await self._publish(model.update())

    # ---- commands -----------------------------------------------------------------

    async def _run(self, instance, action: Callable[[], None], event: str) -> None:
        """Apply a model command and publish at once; a refusal goes to MSG and fails the put."""
        async with self._turn:
            try:
                action()
            except LoadFrameRefused as exc:
                await self.message.write(fixed_length(str(exc)))
                raise
            if instance.alarm.status is AlarmStatus.WRITE:
                await instance.alarm.write(status=AlarmStatus.NO_ALARM, severity=AlarmSeverity.NO_ALARM)
            await self.message.write(fixed_length(event))
            await self._publish_settings()
            await self._publish(self.model.update())
        self._wake.set()

    @mode.putter
    async def mode(self, instance, value):
        await self._run(instance, lambda: self.model.set_mode(LoadingMode.from_label(value)),
                        f"loading mode {value}")

    @control.putter
    async def control(self, instance, value):
        await self._run(instance, lambda: self.model.set_control(ControlMode.from_label(value)),
                        f"control mode {value}")

    @speed.putter
    async def speed(self, instance, value):
        await self._run(instance, lambda: self.model.set_speed(value), f"speed {value:g} mm/min")

    @force_limit.putter
    async def force_limit(self, instance, value):
        await self._run(instance, lambda: self.model.set_force_limit(value), f"force limit {value:g} N")

    @go.putter
    async def go(self, instance, value):
        if value == "Go":
            control = self.model.control
            target = self.force_target.value if control is ControlMode.LOAD else self.extension_target.value
            units = "N" if control is ControlMode.LOAD else "mm"
            await self._run(instance, lambda: self.model.start(control, target),
                            f"moving to {target:g} {units} ({control.label} control)")
            await self.moves_started.write(self.moves_started.value + 1)
        return "Idle"

    @stop.putter
    async def stop(self, instance, value):
        if value == "Stop":
            await self._run(instance, self.model.stop, "stopped")
        return "Idle"

    @alarm_clear.putter
    async def alarm_clear(self, instance, value):
        if value == "Clear":
            await self._run(instance, self.model.clear_alarm, "alarm cleared")
        return "Idle"

    @mount.putter
    async def mount(self, instance, value):
        if value == "Mount":
            await self._run(instance, self.model.mount_specimen, "new specimen mounted")
        return "Idle"

    # ---- readbacks ----------------------------------------------------------------

    @force_rbv.startup
    async def force_rbv(self, instance, async_lib):
        """Publish readbacks: every ACTIVE_PERIOD_S while anything changes, else every IDLE_PERIOD_S."""
        while True:
            async with self._turn:
                await self._publish(self.model.update())
            period = IDLE_PERIOD_S if self.model.is_quiet(IDLE_PERIOD_S) else ACTIVE_PERIOD_S
            await wait_for_wake(self._wake, period)

    async def _publish_settings(self) -> None:
        """Readbacks of the settings and the mode-dependent extension range."""
        model = self.model
        low, high = model.extension_range()
        if (self.extension_target.lower_ctrl_limit, self.extension_target.upper_ctrl_limit) != (low, high):
            await self.extension_target.write_metadata(lower_ctrl_limit=low, upper_ctrl_limit=high)
        for pv, value in (
            (self.mode_rbv, model.mode.label),
            (self.control_rbv, model.control.label),
            (self.speed_rbv, model.speed_mm_per_min),
            (self.force_limit_rbv, model.force_limit_n),
            (self.extension_min, low),
            (self.extension_max, high),
        ):
            if pv.value != value:
                await pv.write(value)

    async def _publish(self, state: LoadFrameState) -> None:
        """Write what changed; the alarm before the flags, DMOV last, so clients see the cause first."""
        tripped = state.alarm is not FrameAlarm.NO_ALARM
        if self.alarm_message.value != fixed_length(state.alarm_message):
            await self.alarm_message.write(fixed_length(state.alarm_message))
        if self.alarm.value != state.alarm.label:
            if tripped:
                await self.message.write(fixed_length(state.alarm_message))
            severity = AlarmSeverity.MAJOR_ALARM if tripped else AlarmSeverity.NO_ALARM
            await self.alarm.write(state.alarm.label, verify_value=False,
                                   status=AlarmStatus.STATE if tripped else AlarmStatus.NO_ALARM, severity=severity)
        force_alarm = state.alarm is FrameAlarm.FORCE_LIMIT
        await self.force_rbv.write(
            self.model.measure_force(), verify_value=False,
            status=AlarmStatus.HIHI if force_alarm else AlarmStatus.NO_ALARM,
            severity=AlarmSeverity.MAJOR_ALARM if force_alarm else AlarmSeverity.NO_ALARM,
        )
        for pv, value in (
            (self.extension_rbv, state.extension_mm),
            (self.peak_rbv, state.peak_force_n),
            (self.specimen, state.specimen.label),
            (self.holding, int(state.holding)),
            (self.moving, int(state.moving)),
            (self.done, int(state.done)),
        ):
            if pv.value != value:
                await pv.write(value)
