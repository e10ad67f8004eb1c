"""PLACEHOLDER: replaced by the real IOC."""

from caproto.server import PVGroup

from ..models.source import SourceModel


class SourceIOC(PVGroup):
    def __init__(self, prefix: str, model: SourceModel) -> None:
        super().__init__(prefix)
        self.model = model
