"""PLACEHOLDER: replaced by the real IOC."""

from caproto.server import PVGroup

from ..models.loadcell import LoadFrameModel


class LoadCellIOC(PVGroup):
    def __init__(self, prefix: str, model: LoadFrameModel) -> None:
        super().__init__(prefix)
        self.model = model
