"""PLACEHOLDER: replaced by the real model."""

from ...config import SourceConfig
from ..clock import SimClock


class SourceModel:
    def __init__(self, config: SourceConfig, clock: SimClock) -> None:
        self.config = config
        self.clock = clock
