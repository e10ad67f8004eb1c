"""ophyd device for the Deben-class in-situ loading stage (``<P>LOAD:``, docs/pv-reference.md).

``load.set(force_n)`` loads the specimen in load control and returns a Status that
finishes once the force is stable at the target (DMOV); the stage then keeps holding
that force. ``load.set_extension(mm)`` drives the crosshead instead. Both check the
target, the speed and the stage's state before anything moves, and the Status fails
with a :class:`LoadCellAlarm` (or :class:`SpecimenFailed`) when the move ends on an
alarm. Sign convention: positive = the loading mode's direction (Compression mode:
positive force compresses the specimen).
"""

from __future__ import annotations

import math
import threading

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind
from ophyd.status import DeviceStatus
from ophyd.utils import LimitError

from .signals import CommandRefused, ConfirmedSignal, confirmed_put, in_order, put_completed

#: Enum labels of the IOC (the PV contract, docs/pv-reference.md).
NO_ALARM = "No alarm"
SPECIMEN_FAILED_ALARM = "Specimen failed"
INTACT_SPECIMEN = "Intact"
FAILED_SPECIMEN = "Failed"
LOAD_CONTROL = "Load"
EXTENSION_CONTROL = "Extension"


class LoadCellAlarm(RuntimeError):
    """A move ended on a latched alarm (force limit, travel limit), or one blocks the next move."""


class SpecimenFailed(LoadCellAlarm):
    """The specimen broke: the force dropped to about 0 and the motor stopped."""


class LoadCellStopped(RuntimeError):
    """The move was stopped (``stop()``) before it finished."""


class _MoveWatch:
    """Follows one GO through DMOV and ALM to its Status.

    Monitor callbacks arrive in the IOC's order, the first one being the value at
    subscription (DMOV=1), so the move counts as started only once DMOV=0 is seen.
    """

    def __init__(self, device: LoadCell, status: DeviceStatus) -> None:
        self.device = device
        self.status = status
        self._started = False
        self._finished = False
        self._lock = threading.Lock()
        self._subscriptions = [
            (device.done, device.done.subscribe(self._on_done, run=False)),
            (device.alarm, device.alarm.subscribe(self._on_alarm, run=False)),
        ]
        status.add_callback(self._unsubscribe)

    def finish(self, exc: Exception | None = None) -> None:
        """Complete the Status once: successfully, or failed with ``exc``."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        # Outside the lock: a failed DeviceStatus calls device.stop(), which calls finish().
        if exc is None:
            self.status.set_finished()
        else:
            self.status.set_exception(exc)

    def _on_done(self, value, **kwargs) -> None:
        with self._lock:
            if value == 0:
                self._started = True
                return
            started = self._started
        if started:
            self.finish()

    def _on_alarm(self, value, **kwargs) -> None:
        if value == NO_ALARM:
            return
        error = SpecimenFailed if value == SPECIMEN_FAILED_ALARM else LoadCellAlarm
        message = self.device.alarm_message.get(use_monitor=False)
        self.finish(error(f"{self.device.name}: {message}"))

    def _unsubscribe(self, status: DeviceStatus) -> None:
        for signal, cid in self._subscriptions:
            signal.unsubscribe(cid)


class LoadCell(Device):
    """Deben Microtest/CT5000-class loading stage: force and extension readings, load- or
    extension-controlled moves whose Status finishes when the force is stable."""

    force = Cpt(EpicsSignalRO, "FORCE_RBV", kind=Kind.hinted)
    extension = Cpt(EpicsSignalRO, "EXT_RBV", kind=Kind.hinted)
    specimen_state = Cpt(EpicsSignalRO, "SPEC_STATE", string=True, kind=Kind.normal)

    # set() on these raises CommandRefused with the IOC's reason when the IOC refuses the value.
    mode = Cpt(ConfirmedSignal, "MODE_RBV", write_pv="MODE", string=True, kind=Kind.config)
    control_mode = Cpt(ConfirmedSignal, "CTRL_RBV", write_pv="CTRL", string=True, kind=Kind.config)
    speed = Cpt(ConfirmedSignal, "SPEED_RBV", write_pv="SPEED", limits=True, kind=Kind.config)
    force_limit = Cpt(ConfirmedSignal, "FORCE_LIM_RBV", write_pv="FORCE_LIM", limits=True, kind=Kind.config)
    capacity = Cpt(EpicsSignalRO, "CAP_RBV", kind=Kind.config)

    force_target = Cpt(EpicsSignal, "FORCE", kind=Kind.omitted)
    extension_target = Cpt(EpicsSignal, "EXT", kind=Kind.omitted)
    extension_low = Cpt(EpicsSignalRO, "EXT_MIN_RBV", kind=Kind.omitted)
    extension_high = Cpt(EpicsSignalRO, "EXT_MAX_RBV", kind=Kind.omitted)
    peak_force = Cpt(EpicsSignalRO, "PEAK_RBV", kind=Kind.omitted)
    go = Cpt(EpicsSignal, "GO", kind=Kind.omitted)
    stop_command = Cpt(EpicsSignal, "STOP", kind=Kind.omitted)
    moving = Cpt(EpicsSignalRO, "MOVN", kind=Kind.omitted)
    done = Cpt(EpicsSignalRO, "DMOV", kind=Kind.omitted)
    holding = Cpt(EpicsSignalRO, "HOLDING", kind=Kind.omitted)
    moves_started = Cpt(EpicsSignalRO, "MOVE_N", kind=Kind.omitted)
    alarm = Cpt(EpicsSignalRO, "ALM", string=True, kind=Kind.omitted)
    alarm_message = Cpt(EpicsSignalRO, "ALM_MSG", string=True, kind=Kind.omitted)
    alarm_clear = Cpt(EpicsSignal, "ALM_CLR", kind=Kind.omitted)
    mount = Cpt(EpicsSignal, "MOUNT", kind=Kind.omitted)
    message = Cpt(EpicsSignalRO, "MSG", string=True, kind=Kind.omitted)

    def __init__(self, prefix: str = "", *, name: str, **kwargs) -> None:
        super().__init__(prefix, name=name, **kwargs)
        self._watch: _MoveWatch | None = None

    # ---- moves --------------------------------------------------------------------

    def set(self, force_n: float, *, timeout: float | None = None) -> DeviceStatus:
        """Load to ``force_n`` (N) in load control; done once the force is stable there."""
        self._check_ready()
        self._check_target_force(force_n)
        if self.specimen_state.get() == FAILED_SPECIMEN:
            raise SpecimenFailed(
                f"{self.name}: the specimen has failed and carries no load, so {force_n:g} N cannot be reached; "
                f"mount a new one ({self.name}.mount_specimen()) or move with set_extension()"
            )
        return self._move(LOAD_CONTROL, self.force_target, force_n, timeout)

    def set_extension(self, extension_mm: float, *, timeout: float | None = None) -> DeviceStatus:
        """Drive the crosshead to ``extension_mm`` (mm) at the set speed; done once the force is stable."""
        self._check_ready()
        low, high = self.extension_low.get(), self.extension_high.get()
        if not (math.isfinite(extension_mm) and low <= extension_mm <= high):
            raise LimitError(
                f"{self.name}: target extension {extension_mm:g} mm is outside the travel range "
                f"{low:g} .. {high:g} mm ({self.mode.get()} mode)"
            )
        return self._move(EXTENSION_CONTROL, self.extension_target, extension_mm, timeout)

    def stop(self, *, success: bool = False) -> None:
        """Stop the crosshead and end a load hold; a pending move's Status fails unless ``success``.

        The RunEngine calls ``stop(success=True)`` on every moved device when a plan ends,
        pauses or aborts: that stops a move still under way but keeps a load the stage
        already holds, so a load set in one plan stays on for the next (tomography under
        load). ``stop()`` as an operator calls it always stops and ends the hold.
        """
        watch = self._watch
        pending = watch is not None and not watch.status.done
        if success and not pending:
            return
        self.stop_command.put(1, wait=False)
        if pending:
            watch.finish(None if success else LoadCellStopped(f"{self.name}: move stopped before it finished"))

    def clear_alarm(self) -> None:
        """Acknowledge the latched alarm so the next move may start."""
        self.alarm_clear.put(1, wait=True)

    def mount_specimen(self) -> None:
        """Tell the stage a fresh specimen is mounted (unloaded, at the present position)."""
        if self.done.get() != 1 or self.holding.get() == 1:
            raise RuntimeError(
                f"{self.name}: cannot mount a specimen while moving or holding a load; call stop() first"
            )
        self.mount.put(1, wait=True)
        if self.specimen_state.get() != INTACT_SPECIMEN:
            raise CommandRefused(f"{self.name}: MOUNT refused: {self.message.get()}")

    def _check_target_force(self, force_n: float) -> None:
        capacity, limit = self.capacity.get(), self.force_limit.get()
        if not math.isfinite(force_n) or abs(force_n) > capacity:
            raise LimitError(
                f"{self.name}: target force {force_n:g} N is beyond the cell capacity: allowed "
                f"-{capacity:g} .. {capacity:g} N"
            )
        if abs(force_n) > limit:
            raise LimitError(
                f"{self.name}: target force {force_n:g} N is beyond the force limit: allowed -{limit:g} .. "
                f"{limit:g} N; lower the target or raise {self.force_limit.name} (at most {capacity:g} N)"
            )

    def _check_ready(self) -> None:
        """Refuse to start while a move runs, an alarm is latched or the speed is out of range."""
        if self.done.get() != 1:
            raise RuntimeError(f"{self.name}: a move is in progress (DMOV=0); wait for it or call stop()")
        alarm = self.alarm.get()
        if alarm != NO_ALARM:
            raise LoadCellAlarm(
                f"{self.name}: the {alarm.lower()} alarm is latched ({self.alarm_message.get()}); "
                f"call {self.name}.clear_alarm() before moving"
            )
        speed, (low, high) = self.speed.get(), self.speed.limits
        if not low <= speed <= high:
            raise LimitError(f"{self.name}: speed {speed:g} mm/min is outside the allowed range {low:g} .. {high:g}")

    def _move(self, control: str, target_signal: EpicsSignal, target: float, timeout: float | None) -> DeviceStatus:
        """Select the control mode, write the target and GO; the Status follows DMOV and ALM.

        Returns at once: the puts run in order through their completion callbacks, and
        a refused control mode or GO fails the Status with the IOC's reason.
        """
        status = DeviceStatus(self, timeout=timeout)
        watch = self._watch = _MoveWatch(self, status)
        accepted_before = self.moves_started.get(use_monitor=False)
        steps = []
        if self.control_mode.get() != control:
            steps.append(lambda: confirmed_put(self.control_mode, control, self.message))
        steps += [lambda: put_completed(target_signal, target), lambda: put_completed(self.go, 1)]

        def sent(done) -> None:
            if not done.success:
                watch.finish(done.exception())
            elif self.moves_started.get(use_monitor=False) == accepted_before:
                watch.finish(CommandRefused(f"{self.name}: GO refused: {self.message.get()}"))

        in_order(self, steps).add_callback(sent)
        return status
