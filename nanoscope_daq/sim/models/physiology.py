"""PLACEHOLDER: replaced by the real model."""

from ...config import PhysiologyConfig
from ..clock import SimClock


class PhysiologyModel:
    def __init__(self, config: PhysiologyConfig, clock: SimClock, seed: int = 0) -> None:
        self.config = config
        self.clock = clock
