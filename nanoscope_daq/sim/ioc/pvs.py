"""pvproperty builders shared by this project's own PV groups (source, load cell, physiology).

Every PV they make carries its doc, units and precision, so docs/pv-reference.md,
generated from the groups, describes it completely. Each PV gets an alarm of its own
(caproto otherwise shares one alarm among all PVs of a group, so one PV's alarm, or a
refused put, would show on every PV), as each EPICS record has its own.
"""

from __future__ import annotations

import asyncio

from caproto import ChannelType
from caproto.server import pvproperty
from caproto.server.server import PvpropertyDouble

MESSAGE_LENGTH = 256


class PutterChecksLimits(PvpropertyDouble):
    """A float set point whose putter, not caproto, enforces the range.

    caproto refuses an out-of-limit put before the putter runs, with a generic message
    and nothing posted for clients; the model's refusal names the value, the range and
    the fix. Install with ``type_map = {**PVGroup.type_map, float: PutterChecksLimits}``.
    """

    async def verify_value(self, value):
        return await self.putter(self, value)


def fixed_length(text: str, length: int = MESSAGE_LENGTH) -> str:
    """``text`` NUL-padded to a char PV's full length.

    caproto reports a char array's present length as its element count when a client
    connects, and pyepics then reads only that many characters; a fixed length keeps
    every message whole. Clients see the text up to the first NUL.
    """
    return text[: length - 1].ljust(length, "\0")


def setpoint(name: str, doc: str, units: str, precision: int) -> pvproperty:
    return pvproperty(name=name, value=0.0, doc=doc, units=units, precision=precision, alarm_group=name)


def readback(name: str, doc: str, units: str, precision: int) -> pvproperty:
    return pvproperty(
        name=name, value=0.0, doc=doc, units=units, precision=precision, read_only=True, alarm_group=name
    )


def enum_pv(name: str, doc: str, choices: tuple[str, ...], *, read_only: bool = False) -> pvproperty:
    return pvproperty(
        name=name,
        value=choices[0],
        dtype=ChannelType.ENUM,
        enum_strings=choices,
        doc=doc,
        read_only=read_only,
        alarm_group=name,
    )


def message_pv(name: str, doc: str) -> pvproperty:
    """A read-only text PV (char array of MESSAGE_LENGTH); write it with :func:`fixed_length`."""
    return pvproperty(
        name=name,
        value=fixed_length(""),
        dtype=ChannelType.CHAR,
        max_length=MESSAGE_LENGTH,
        string_encoding="utf-8",
        read_only=True,
        doc=doc,
        alarm_group=name,
    )


async def wait_for_wake(wake: asyncio.Event, timeout: float) -> None:
    """Sleep until ``wake`` is set or ``timeout`` s pass, then re-arm it: a publish loop's pause."""
    try:
        await asyncio.wait_for(wake.wait(), timeout)
    except TimeoutError:
        pass
    wake.clear()


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel ``task`` (if still running) and wait until it has finished unwinding."""
    if task is not None and not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
