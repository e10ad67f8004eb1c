"""The instrument's dead man's switch and scan lock (``<P>WD:``), on the instrument side.

A real installation provides this in a PLC or a sequencer next to the IOCs; the
simulator serves the same PVs. A controlling process takes the lock by writing its
identity to ``OWNER`` (refused, with who holds it, while another owner's heartbeat is
alive), then writes ``HEARTBEAT`` at least every ``TIMEOUT`` seconds while it holds the
beam. When the heartbeat lapses (the client died, froze or lost the network) the
watchdog puts the instrument in its safe state itself: shutter closed, rotation
stopped, PSO disarmed, camera stopped and its file closed cleanly, and the lock
released. ``RELEASE`` (written with the owner's identity) gives the lock back.
"""

from __future__ import annotations

import asyncio
import time

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from .pvs import fixed_length, message_pv

OWNER_LENGTH = 39
"""An identity fits one EPICS string (40 bytes with its NUL)."""


def _text_pv(name: str, doc: str) -> pvproperty:
    return pvproperty(name=name, value="", dtype=ChannelType.STRING, doc=doc)


def _channel(pvdb: dict, pvname: str):
    """The served channel of ``pvname`` (a record's field too: ``REC.FIELD``)."""
    record, _, field = pvname.partition(".")
    if record not in pvdb:
        raise ValueError(f"the watchdog's safe state names {pvname}, which no IOC serves")
    return pvdb[record].get_field(field) if field else pvdb[record]


class WatchdogIOC(PVGroup):
    """Dead man's switch and scan lock: a real installation must provide these (a PLC or a sequencer).

    A process takes the instrument by writing its identity
    to OWNER (refused while another holder's heartbeat is alive) and writes HEARTBEAT at least every
    TIMEOUT s; when the heartbeat lapses the instrument closes the shutter (SRC:SHUTTER=Close),
    disarms the PSO (ROT:PSO:DISARM), stops the rotation (ROT.STOP), stops the camera
    (cam1:Acquire=Done) and closes its file (HDF1:Capture=Done), then frees the lock.
    """

    owner = _text_pv("OWNER", "Who holds the instrument: write your identity to take it (refused while held)")
    release = _text_pv("RELEASE", "Write the owner's identity to give the instrument back")
    heartbeat = pvproperty(name="HEARTBEAT", value=0, doc="The owner writes any value at least every TIMEOUT s")
    timeout = pvproperty(name="TIMEOUT", value=3.0, units="s", precision=2,
                         doc="Heartbeat lapse time: the safe state follows this long after the last HEARTBEAT")
    age = pvproperty(name="AGE_RBV", value=0.0, units="s", precision=2, read_only=True,
                     doc="Seconds since the last HEARTBEAT (0 while nobody holds the instrument)")
    trips = pvproperty(name="TRIPS_RBV", value=0, read_only=True,
                       doc="Times a lapsed heartbeat put the instrument in its safe state")
    message = message_pv("MSG", "Last lock event or lapse, with what was done")

    def __init__(self, prefix: str, pvdb: dict, safe_state: list[tuple[str, object]], *, timeout_s: float,
                 **kwargs) -> None:
        """The watchdog over the PVs of ``pvdb``.

        Parameters
        ----------
        prefix
            PV prefix of the group (``<P>WD:``).
        pvdb
            Every PV the server serves: the safe state is reached by writing them, as an
            operator would, so each IOC's own logic (closing the file, stopping the axis) runs.
        safe_state
            ``(PV name, value)`` written in order when the heartbeat lapses.
        timeout_s
            Default heartbeat lapse time (``TIMEOUT``).
        """
        super().__init__(prefix, **kwargs)
        self._safe_state = [(name, _channel(pvdb, name), value) for name, value in safe_state]
        self._timeout_s = timeout_s
        self._last_beat = 0.0

    async def initialize(self) -> None:
        await self.timeout.write(self._timeout_s, verify_value=False)

    def _alive(self) -> bool:
        return bool(self.owner.value) and time.monotonic() - self._last_beat < self.timeout.value

    @owner.putter
    async def owner(self, instance, value: str) -> str:
        value = str(value).strip()
        if not value or len(value) > OWNER_LENGTH:
            raise ValueError(f"OWNER needs an identity of 1 to {OWNER_LENGTH} characters (e.g. host:pid:token); "
                             "to give the lock back write RELEASE")
        current = self.owner.value
        if current and current != value and self._alive():
            refusal = (f"the instrument is in use by {current} (heartbeat {self.age.value:.1f} s ago); "
                       "wait for its scan to end, or stop that process")
            await self.message.write(fixed_length(refusal))
            raise ValueError(refusal)
        self._last_beat = time.monotonic()
        await self.message.write(fixed_length(f"taken by {value}"))
        return value

    @release.putter
    async def release(self, instance, value: str) -> str:
        if str(value).strip() != self.owner.value:
            raise ValueError(f"RELEASE must name the owner ({self.owner.value or 'nobody holds it'})")
        await self.owner.write("", verify_value=False)
        await self.message.write(fixed_length(f"released by {value}"))
        return ""

    @heartbeat.putter
    async def heartbeat(self, instance, value: int) -> int:
        self._last_beat = time.monotonic()
        return value

    @timeout.putter
    async def timeout(self, instance, value: float) -> float:
        if not 0.5 <= value <= 60.0:
            raise ValueError(f"TIMEOUT {value} s must be within 0.5 .. 60 s")
        return value

    @age.scan(period=0.2)
    async def age(self, instance, async_lib) -> None:
        holder = self.owner.value
        if not holder:
            if instance.value:
                await instance.write(0.0)
            return
        age = time.monotonic() - self._last_beat
        await instance.write(round(age, 2))
        if age >= self.timeout.value:
            await self._lapse(holder, age)

    async def _lapse(self, holder: str, age: float) -> None:
        """Safe state, then the lock released; every step is tried even if one fails."""
        failures = []
        for pvname, channel, value in self._safe_state:
            try:
                await channel.write(value)
            except Exception as exc:  # noqa: BLE001 -- the next step must still run
                failures.append(f"{pvname}: {exc}")
            await asyncio.sleep(0)
        await self.owner.write("", verify_value=False)
        await self.trips.write(self.trips.value + 1)
        outcome = "; failed: " + "; ".join(failures) if failures else ""
        await self.message.write(fixed_length(
            f"heartbeat of {holder} lapsed after {age:.1f} s: shutter closed, rotation stopped, PSO disarmed, "
            f"camera stopped, file closed, lock released{outcome}"
        ))
