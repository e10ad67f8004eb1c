"""Signal helpers shared by the project's devices: confirmed puts, chained and condition-driven statuses.

pyepics ignores the error an IOC returns for a refused put, so a client cannot tell a
refused set point from an accepted one. :func:`confirmed_put` puts with completion,
reads the set point back and fails its Status with :class:`CommandRefused` and the
IOC's own reason (the ``MSG`` PV of this project's IOCs). Every helper here returns a
Status at once (ophyd's ``set()`` contract); nothing blocks its caller.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ophyd import EpicsSignal, EpicsSignalRO
from ophyd.ophydobj import OphydObject
from ophyd.signal import EpicsSignalBase
from ophyd.status import Status, StatusBase
from ophyd.utils import InvalidState, WaitTimeoutError

PUT_TIMEOUT_S = 5.0


class CommandRefused(RuntimeError):
    """The IOC refused a command or a set point; the message carries its reason."""


def _same(kept: Any, wanted: Any) -> bool:
    if isinstance(wanted, float | int) and not isinstance(wanted, bool):
        return math.isclose(float(kept), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return kept == wanted


def _settle(status: StatusBase, error: BaseException | None = None) -> None:
    """Finish ``status`` (or fail it with ``error``) unless it is already done (e.g. timed out)."""
    if isinstance(error, WaitTimeoutError):  # ophyd reserves it for a Status's own timeout and refuses it here
        error = TimeoutError(str(error) or f"{type(error).__name__} in a step of {status}")
    try:
        if error is None:
            status.set_finished()
        else:
            status.set_exception(error)
    except InvalidState:
        pass


def put_completed(signal: EpicsSignal, value: Any, timeout: float = PUT_TIMEOUT_S) -> Status:
    """Put ``value`` with completion; the Status finishes when the IOC has processed the put."""
    status = Status(signal, timeout=timeout)
    signal.put(value, use_complete=True, callback=lambda **_: _settle(status))
    return status


def confirmed_put(
    signal: EpicsSignal, value: Any, reason: EpicsSignalRO | None = None, timeout: float = PUT_TIMEOUT_S
) -> Status:
    """Put ``value`` with completion; the Status fails with :class:`CommandRefused` if the IOC did not keep it.

    The refusal carries ``reason``'s text (the IOC's message), read when the put completed.
    """
    status = Status(signal, timeout=timeout)

    def completed(**_: Any) -> None:
        try:
            kept = signal.get_setpoint(use_monitor=False)
            if _same(kept, value):
                _settle(status)
                return
            why = reason.get(use_monitor=False) if reason is not None else f"the set point stayed at {kept!r}"
            _settle(status, CommandRefused(f"{signal.name}: {value!r} was refused: {why}"))
        except Exception as exc:  # noqa: BLE001 -- a lost connection fails the Status with its reason
            _settle(status, exc)

    signal.put(value, use_complete=True, callback=completed)
    return status


def then(first: StatusBase, step: Callable[[], StatusBase], obj: OphydObject | None = None) -> Status:
    """A Status for ``first`` followed by ``step()``: ``step`` starts once ``first`` succeeded.

    A failure of either (or an exception raised by ``step``) fails the returned Status.
    """
    result = Status(obj if obj is not None else first.obj)

    def next_step(done: StatusBase) -> None:
        if not done.success:
            _settle(result, done.exception() or RuntimeError(f"{done} failed"))
            return
        try:
            following = step()
        except Exception as exc:  # noqa: BLE001 -- carried by the Status
            _settle(result, exc)
            return
        following.add_callback(
            lambda st: _settle(result, None if st.success else st.exception() or RuntimeError(f"{st} failed"))
        )

    first.add_callback(next_step)
    return result


def done_status(obj: OphydObject) -> Status:
    """A Status that is already done (nothing to wait for)."""
    status = Status(obj)
    status.set_finished()
    return status


def in_order(obj: OphydObject, steps: Sequence[Callable[[], StatusBase]]) -> StatusBase:
    """Run ``steps`` one after the other, each starting when the previous Status succeeded."""
    status: StatusBase = done_status(obj)
    for step in steps:
        status = then(status, step, obj)
    return status


def puts_in_order(
    obj: OphydObject, pairs: Iterable[tuple[EpicsSignal, Any]], timeout: float = PUT_TIMEOUT_S
) -> StatusBase:
    """Put each ``(signal, value)`` with completion, in order (the IOC may depend on the order)."""
    return in_order(obj, [lambda s=signal, v=value: put_completed(s, v, timeout) for signal, value in pairs])


WHOLE_WAVEFORM = 1 << 16
"""A count above any char waveform's length: pyepics then reads all of it."""


class WholeStringSignalRO(EpicsSignalRO):
    """A long string (char waveform) read whole at every ``get``.

    Without a count pyepics asks the IOC for as many elements as the last update it saw
    held, so a value longer than the previous one came back cut: the camera's first file
    name after the IOC started read as "/".
    """

    def get(self, **kwargs: Any) -> Any:
        kwargs.setdefault("count", WHOLE_WAVEFORM)
        return super().get(**kwargs)


class ConfirmedSignal(EpicsSignal):
    """An EpicsSignal whose ``set`` Status fails with :class:`CommandRefused` when the IOC refuses the value.

    The reason comes from the parent device's ``message`` signal when it has one. The
    returned Status is finished once the IOC has accepted the set point (not when a
    readback has followed it).
    """

    def set(self, value: Any, *, timeout: float | None = None) -> Status:
        return confirmed_put(self, value, getattr(self.parent, "message", None), timeout or PUT_TIMEOUT_S)


def condition_status(
    obj: OphydObject,
    signals: Iterable[OphydObject],
    done: Callable[[], bool],
    failure: Callable[[], str | None] | None = None,
    timeout: float | None = None,
) -> Status:
    """A status finished when ``done()`` holds, or failed with ``failure()``'s reason.

    Both are re-evaluated whenever one of ``signals`` updates; subscriptions end with the status.
    A plain Status, not a DeviceStatus: a refusal or timeout does not call ``obj.stop()``
    (stopping is for the RunEngine and the operator to decide).
    """
    status = Status(obj, timeout=timeout)
    lock = threading.Lock()

    def check(*args: Any, **kwargs: Any) -> None:
        with lock:
            if status.done:
                return
            reason = failure() if failure is not None else None
            try:
                if reason:
                    status.set_exception(CommandRefused(f"{obj.name}: {reason}"))
                elif done():
                    status.set_finished()
            except InvalidState:  # finished by its timeout meanwhile
                pass

    subscriptions = [(signal, signal.subscribe(check, run=False)) for signal in signals]

    def unsubscribe(_status: StatusBase) -> None:
        for signal, token in subscriptions:
            signal.unsubscribe(token)

    status.add_callback(unsubscribe)
    check()
    return status


def progress_status(
    obj: OphydObject,
    counter: EpicsSignalBase,
    reached: Callable[[], bool],
    failure: Callable[[], str | None],
    stall_s: float,
    stalled: Callable[[float], str],
) -> Status:
    """Finished when ``reached()``; failed when ``counter`` has not moved for ``stall_s`` or ``failure()`` says why.

    A wait bounded by progress, not by a fixed total: as long as ``counter`` keeps
    changing, it waits; once it stands still for ``stall_s`` the Status fails with
    ``stalled(seconds)``. A disconnect of ``counter`` (its IOC died) fails it at once.
    """
    status = condition_status(obj, [counter], reached, failure)
    lock = threading.Lock()
    timer: list[threading.Timer] = []

    def stand_still() -> None:
        _settle(status, TimeoutError(f"{obj.name}: {stalled(stall_s)}"))

    def restart(*_: Any, **__: Any) -> None:
        with lock:
            if timer:
                timer[0].cancel()
                timer.clear()
            if not status.done:
                timer.append(threading.Timer(stall_s, stand_still))
                timer[0].daemon = True
                timer[0].start()

    def connection(*_: Any, connected: bool = True, **__: Any) -> None:
        if not connected:
            _settle(status, ConnectionError(f"{obj.name}: {counter.pvname} stopped answering (its IOC is gone)"))

    tokens = [counter.subscribe(restart, run=False), counter.subscribe(connection, event_type="meta", run=False)]

    def finish(_status: StatusBase) -> None:
        restart()  # cancels the timer: the status is done
        for token in tokens:
            counter.unsubscribe(token)

    restart()
    status.add_callback(finish)
    return status
