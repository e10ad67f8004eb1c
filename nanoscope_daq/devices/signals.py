"""Signal helpers shared by the project's devices: confirmed puts and condition-driven statuses.

pyepics ignores the error an IOC returns for a refused put, so a client cannot tell a
refused set point from an accepted one. :func:`put_confirmed` puts with completion,
reads the set point back and raises :class:`CommandRefused` with the IOC's own reason
(the ``MSG`` PV of this project's IOCs).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ophyd import EpicsSignal, EpicsSignalRO
from ophyd.ophydobj import OphydObject
from ophyd.status import DeviceStatus, Status
from ophyd.utils import InvalidState

PUT_TIMEOUT_S = 5.0


class CommandRefused(RuntimeError):
    """The IOC refused a command or a set point; the message carries its reason."""


def _same(kept: Any, wanted: Any) -> bool:
    if isinstance(wanted, float | int) and not isinstance(wanted, bool):
        return math.isclose(float(kept), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return kept == wanted


def put_confirmed(
    signal: EpicsSignal, value: Any, reason: EpicsSignalRO | None = None, timeout: float = PUT_TIMEOUT_S
) -> None:
    """Put ``value``, wait for completion and check the IOC kept it; else raise with ``reason``'s text."""
    completed = threading.Event()
    signal.put(value, use_complete=True, callback=lambda **kwargs: completed.set())
    if not completed.wait(timeout):
        raise TimeoutError(f"{signal.name}: the put of {value!r} did not complete within {timeout:g} s")
    kept = signal.get_setpoint(use_monitor=False)
    if not _same(kept, value):
        why = reason.get(use_monitor=False) if reason is not None else f"the set point stayed at {kept!r}"
        raise CommandRefused(f"{signal.name}: {value!r} was refused: {why}")


class ConfirmedSignal(EpicsSignal):
    """An EpicsSignal whose ``set`` raises :class:`CommandRefused` when the IOC refuses the value.

    The reason comes from the parent device's ``message`` signal when it has one. The
    returned Status is finished once the IOC has accepted the set point (not when a
    readback has followed it).
    """

    def set(self, value: Any, *, timeout: float | None = None, settle_time: float | None = None) -> Status:
        put_confirmed(self, value, getattr(self.parent, "message", None), timeout or PUT_TIMEOUT_S)
        status = Status(self, settle_time=settle_time)
        status.set_finished()
        return status


def condition_status(
    obj: OphydObject,
    signals: Iterable[OphydObject],
    done: Callable[[], bool],
    failure: Callable[[], str | None] | None = None,
    timeout: float | None = None,
) -> DeviceStatus:
    """A status finished when ``done()`` holds, or failed with ``failure()``'s reason.

    Both are re-evaluated whenever one of ``signals`` updates; subscriptions end with the status.
    """
    status = DeviceStatus(obj, timeout=timeout)
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

    def unsubscribe(_status: DeviceStatus) -> None:
        for signal, token in subscriptions:
            signal.unsubscribe(token)

    status.add_callback(unsubscribe)
    check()
    return status
