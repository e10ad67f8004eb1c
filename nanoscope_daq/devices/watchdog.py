"""The client side of the instrument's dead man's switch and scan lock (``<P>WD:``, docs/pv-reference.md).

Staging :class:`InstrumentLock` takes the instrument for this process (refused, naming
the holder, while another process's scan holds it) and starts a heartbeat thread;
unstaging stops it and gives the instrument back. The heartbeat is the one job that
must run beside the RunEngine in a thread: it has to keep beating while a plan waits
and to stop when the process freezes or dies, which is exactly what the instrument's
watchdog watches for.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO

from .signals import confirmed_put

BEATS_PER_TIMEOUT = 4
"""Heartbeats per lapse time: three may be lost before the instrument makes itself safe."""


def client_identity() -> str:
    """This process, as the lock names it: ``host:pid:token`` (at most 39 characters)."""
    return f"{socket.gethostname()[:16]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class InstrumentLock(Device):
    """One scan at a time, and a heartbeat that keeps the beam on only while this process is alive."""

    owner = Cpt(EpicsSignal, "OWNER", string=True, kind="omitted")
    release = Cpt(EpicsSignal, "RELEASE", string=True, kind="omitted")
    heartbeat = Cpt(EpicsSignal, "HEARTBEAT", kind="omitted")
    timeout = Cpt(EpicsSignal, "TIMEOUT", kind="config")
    age = Cpt(EpicsSignalRO, "AGE_RBV", kind="omitted")
    trips = Cpt(EpicsSignalRO, "TRIPS_RBV", kind="omitted")
    message = Cpt(EpicsSignalRO, "MSG", string=True, kind="omitted")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.identity = client_identity()
        self._beating: threading.Event | None = None

    @property
    def held(self) -> bool:
        """This process holds the instrument (the watchdog has not released it)."""
        return self.owner.get(use_monitor=False) == self.identity

    def stage(self) -> list:
        """Take the instrument and start the heartbeat; raises :class:`CommandRefused` naming the holder."""
        confirmed_put(self.owner, self.identity, self.message).wait(5.0)
        stop = self._beating = threading.Event()
        period = float(self.timeout.get()) / BEATS_PER_TIMEOUT
        threading.Thread(target=self._beat, args=(stop, period), name=f"{self.name}-heartbeat", daemon=True).start()
        return super().stage()

    def _beat(self, stop: threading.Event, period: float) -> None:
        count = 0
        while not stop.wait(period):
            count += 1
            self.heartbeat.put(count, wait=False)

    def unstage(self) -> list:
        """Stop the heartbeat and give the instrument back (if the watchdog has not already)."""
        if self._beating is not None:
            self._beating.set()
            self._beating = None
        if self.held:
            self.release.put(self.identity, wait=True)
        return super().unstage()
