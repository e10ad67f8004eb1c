"""PLACEHOLDER: replaced by the real IOC."""

from caproto.server import PVGroup

from ..models.physiology import PhysiologyModel


class PhysiologyIOC(PVGroup):
    def __init__(self, prefix: str, model: PhysiologyModel) -> None:
        super().__init__(prefix)
        self.model = model
