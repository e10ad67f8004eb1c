"""The whole microscope as one ophyd Device (DESIGN.md: ``Instrument(prefix)``)."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor

from .detector import XrmDetector
from .loadcell import LoadCell
from .physiology import PhysiologyMonitor
from .source import XraySource
from .stages import RotationStage


class Instrument(Device):
    """Stages, source, camera, loading cell and physiology monitor under one PV prefix."""

    rot = Cpt(RotationStage, "ROT")
    sx = Cpt(EpicsMotor, "SX")
    sy = Cpt(EpicsMotor, "SY")
    sz = Cpt(EpicsMotor, "SZ")
    source = Cpt(XraySource, "SRC:")
    det = Cpt(XrmDetector, "CAM:")
    load = Cpt(LoadCell, "LOAD:")
    physio = Cpt(PhysiologyMonitor, "PHYS:")

    def __init__(self, prefix: str, *, name: str = "xrm", **kwargs) -> None:
        super().__init__(prefix, name=name, **kwargs)
