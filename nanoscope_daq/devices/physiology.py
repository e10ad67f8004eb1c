"""PLACEHOLDER: replaced by the real device."""

from ophyd import Device


class PhysiologyMonitor(Device):
    pass
