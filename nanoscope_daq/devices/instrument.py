"""The whole microscope as one ophyd Device (DESIGN.md: ``Instrument(prefix)``)."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor

from .detector import XrmDetector
from .loadcell import LoadCell
from .physiology import PhysiologyMonitor
from .source import XraySource
from .stages import RotationStage
from .watchdog import InstrumentLock


class Instrument(Device):
    """Stages, source, camera, loading cell and physiology monitor under one PV prefix.

    ``wd`` is the instrument-side dead man's switch and scan lock (beyond DESIGN.md's
    list: a real installation provides it in a PLC or sequencer).
    """

    rot = Cpt(RotationStage, "ROT")
    sx = Cpt(EpicsMotor, "SX")
    sy = Cpt(EpicsMotor, "SY")
    sz = Cpt(EpicsMotor, "SZ")
    source = Cpt(XraySource, "SRC:")
    det = Cpt(XrmDetector, "CAM:")
    load = Cpt(LoadCell, "LOAD:")
    physio = Cpt(PhysiologyMonitor, "PHYS:")
    wd = Cpt(InstrumentLock, "WD:")

    def __init__(self, prefix: str, *, name: str = "xrm", **kwargs) -> None:
        super().__init__(prefix, name=name, **kwargs)
