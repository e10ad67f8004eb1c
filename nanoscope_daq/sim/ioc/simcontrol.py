"""Simulator controls (``<P>SIM:``): settings of the simulated world itself, not of a device."""

from __future__ import annotations

from caproto.server import PVGroup, pvproperty

from ..world import World


class SimControlIOC(PVGroup):
    """Controls of the simulated world (no real instrument has these).

    DAY sets the study day of the simulated mouse: the remodelling the camera images
    and the ground truth written next to the data are those of that day.
    """

    day = pvproperty(
        name="DAY", value=0.0, units="d", precision=2,
        doc="Study day of the simulated mouse imaged by the camera (>= 0)",
    )

    def __init__(self, prefix: str, world: World, **kwargs) -> None:
        super().__init__(prefix, **kwargs)
        self.world = world

    async def initialize(self) -> None:
        await self.day.write(self.world.study_day, verify_value=False)

    @day.putter
    async def day(self, instance, value: float) -> float:
        if not value >= 0:
            raise ValueError(f"DAY {value} must be >= 0 (days since the start of the study)")
        self.world.study_day = value
        return value
