"""PLACEHOLDER: replaced by the real IOC."""

from caproto.server import PVGroup

from ..models.motion import Axis


class MotorRecordIOC(PVGroup):
    def __init__(self, prefix: str, model: Axis) -> None:
        super().__init__(prefix)
        self.model = model
