"""What the instrument says it is (``<P>INST:``, docs/pv-reference.md): its imaging geometry and contrast."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignalRO


class InstrumentDescription(Device):
    """The imaging geometry (cone or parallel) and contrast (absorption or zernike) the instrument reports."""

    geometry = Cpt(EpicsSignalRO, "GEOMETRY_RBV", string=True, kind="omitted")
    contrast = Cpt(EpicsSignalRO, "CONTRAST_RBV", string=True, kind="omitted")
