"""PLACEHOLDER: replaced by the real device."""

from ophyd import Device


class XraySource(Device):
    pass
