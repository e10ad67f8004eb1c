"""The whole microscope as one ophyd Device (DESIGN.md: ``Instrument(prefix)``)."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor

from .description import InstrumentDescription
from .detector import XrmDetector
from .loadcell import LoadCell
from .physiology import PhysiologyMonitor
from .source import XraySource
from .stages import RotationStage
from .watchdog import InstrumentLock


class Instrument(Device):
    """Stages, source, camera, loading cell and physiology monitor under one PV prefix.

    ``wd`` is the instrument-side dead man's switch and scan lock, ``inst`` what the
    instrument is (its geometry and contrast); both are beyond DESIGN.md's list, and a
    real installation provides them (a PLC or sequencer, the IOC's database).
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
    inst = Cpt(InstrumentDescription, "INST:")

    def __init__(self, prefix: str, *, name: str = "xrm", **kwargs) -> None:
        super().__init__(prefix, name=name, **kwargs)
