"""Switching the X-ray source on and off as plans, so the command line and the queue can do it."""

from __future__ import annotations

import bluesky.plan_stubs as bps
from bluesky.utils import MsgGenerator

from ..devices import Instrument
from . import validation as check
from .registry import registered


@registered
def source_on(xrm: Instrument, *, kv: float = 60.0, power_w: float = 10.0) -> MsgGenerator[None]:
    """Bring the X-ray source to ``kv`` and ``power_w`` from whatever state it is in.

    Starts and warms up the jet if it is off (minutes, shown by the source's warm-up
    progress), resets an interlock whose cause has cleared, ramps the high voltage and
    power and waits until both readbacks arrive. The shutter stays closed. Values
    outside the source's limits are refused before anything changes.

    Parameters
    ----------
    kv
        High voltage (kV), inside the source's KV limits.
    power_w
        Electron-beam power (W), at most the source's limit for the present spot size.
    """
    kv, power_w = check.source_range(xrm, kv, power_w)
    yield from bps.mv(xrm.source, (kv, power_w))


@registered
def source_off(xrm: Instrument) -> MsgGenerator[None]:
    """Close the shutter, then switch the high voltage off (the jet keeps running, ready for the next scan)."""
    yield from bps.mv(xrm.source.shutter, "close")
    yield from bps.mv(xrm.source.hv, "Off")
