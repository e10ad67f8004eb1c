"""PLACEHOLDER: replaced by the real model."""

from ...config import AxisConfig
from ..clock import SimClock


class Axis:
    def __init__(self, config: AxisConfig, clock: SimClock) -> None:
        self.config = config
        self.clock = clock
