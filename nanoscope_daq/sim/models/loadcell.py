"""PLACEHOLDER: replaced by the real model."""

from ...config import LoadCellConfig
from ..clock import SimClock


class LoadFrameModel:
    def __init__(self, config: LoadCellConfig, clock: SimClock, seed: int = 0) -> None:
        self.config = config
        self.clock = clock
