"""PLACEHOLDER: replaced by the real device."""

from ophyd import EpicsMotor


class RotationStage(EpicsMotor):
    pass
