"""Position-synchronized output (PSO) of the rotation stage, as an ophyd Device.

Armed with a grid ``start + i * step`` (``i < count``) it fires one pulse as the
stage crosses each angle; the camera in External trigger mode takes one frame per
pulse and records the latched encoder angle. Usage in a plan::

    yield from bps.mv(pso.start, 0.0, pso.step, 0.5, pso.count, 360)
    yield from bps.mv(pso.arm, 1)      # completes once STATUS reads Armed
    done = pso.done_status()           # completes once every angle has fired
    ... spin the stage, wait for ``done`` ...
"""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import StatusBase, SubscriptionStatus


class PositionSyncOutput(Device):
    """``<P>ROT:PSO:``: grid (START, STEP, COUNT, WIDTH), ARM/DISARM, STATUS and counters."""

    start = Cpt(EpicsSignal, "START", kind="config")
    step = Cpt(EpicsSignal, "STEP", kind="config")
    count = Cpt(EpicsSignal, "COUNT", kind="config")
    width = Cpt(EpicsSignal, "WIDTH", kind="config")
    arm = Cpt(EpicsSignal, "ARM", kind="omitted", put_complete=True)
    disarm = Cpt(EpicsSignal, "DISARM", kind="omitted", put_complete=True)
    status = Cpt(EpicsSignalRO, "STATUS", string=True, kind="normal")
    fired = Cpt(EpicsSignalRO, "FIRED", kind="normal")
    last_angle = Cpt(EpicsSignalRO, "LAST_ANGLE", kind="normal")
    last_time = Cpt(EpicsSignalRO, "LAST_TIME", kind="omitted")
    message = Cpt(EpicsSignalRO, "MSG", string=True, kind="omitted")

    def grid(self) -> np.ndarray:
        """The angles the PSO fires at, as configured now (degrees)."""
        return self.start.get() + self.step.get() * np.arange(self.count.get())

    def done_status(self, timeout: float | None = None) -> StatusBase:
        """Completes once every grid angle has fired (STATUS reads Done)."""
        return SubscriptionStatus(self.status, lambda value, **_: value == "Done", timeout=timeout, run=True)
