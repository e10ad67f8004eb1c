"""Simulator controls (``<P>SIM:``): settings of the simulated world itself, not of a device."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import numpy as np
from caproto.server import PVGroup, pvproperty

from ..world import World

VIEWS_RENDERED_SCAN_S = 0.5
"""How often VIEWS_RENDERED is read from the camera."""


class CameraViews(Protocol):
    """What the camera offers the simulator's controls: its views prepared ahead, and a count of views rendered."""

    views_rendered: int

    async def prepare_views(self, angles_deg: Sequence[float], binning: int,
                            progress: Callable[[int], Awaitable[None]]) -> None: ...


class SimControlIOC(PVGroup):
    """Controls of the simulated world (no real instrument has these).

    DAY sets the study day of the simulated mouse: the remodelling the camera images
    and the ground truth written next to the data are those of that day.

    PREPARE_VIEWS renders the views of a scan's angle grid into the camera's view cache
    before the scan, a one-off preparation after which a scan of a new specimen state
    (a real-sized leg, a new day or load) runs at the camera's pace instead of waiting on
    the exact renderer for each new view. The angles are the projections' mid-exposure
    angles: the scan's grid plus the rotation during half an exposure.
    """

    day = pvproperty(
        name="DAY", value=0.0, units="d", precision=2,
        doc="Study day of the simulated mouse imaged by the camera (>= 0)",
    )
    views_start = pvproperty(name="VIEWS_START", value=0.0, units="deg", precision=4,
                             doc="First angle of the views PREPARE_VIEWS renders (a projection's mid-exposure angle)")
    views_step = pvproperty(name="VIEWS_STEP", value=0.0, units="deg", precision=6,
                            doc="Angle between consecutive views PREPARE_VIEWS renders")
    views_count = pvproperty(name="VIEWS_COUNT", value=0, doc="Number of views PREPARE_VIEWS renders (>= 1)")
    views_binning = pvproperty(name="VIEWS_BINNING", value=1,
                               doc="Camera binning of the scan the views PREPARE_VIEWS renders are for")
    prepare_views = pvproperty(
        name="PREPARE_VIEWS", value=0,
        doc="Put 1: render the views VIEWS_START + k VIEWS_STEP (k < VIEWS_COUNT) at VIEWS_BINNING in the present "
            "state (day, load, sample position, source kV and power) into the camera's view cache; the put "
            "completes when every view is ready (or is refused with the reason)",
    )
    views_ready = pvproperty(name="VIEWS_READY", value=0, read_only=True,
                             doc="Views of the last preparation rendered so far")
    prepare_time = pvproperty(name="PREPARE_TIME", value=0.0, units="s", precision=2, read_only=True,
                              doc="Wall time the last preparation took")
    views_rendered = pvproperty(
        name="VIEWS_RENDERED", value=0, read_only=True,
        doc="Views the camera's render workers have rendered exactly so far; the others came from their view caches",
    )

    def __init__(self, prefix: str, world: World, *, camera: CameraViews, **kwargs) -> None:
        super().__init__(prefix, **kwargs)
        self.world = world
        self.camera = camera

    async def initialize(self) -> None:
        await self.day.write(self.world.study_day, verify_value=False)

    @day.putter
    async def day(self, instance, value: float) -> float:
        if not value >= 0:
            raise ValueError(f"DAY {value} must be >= 0 (days since the start of the study)")
        self.world.study_day = value
        return value

    @prepare_views.putter
    async def prepare_views(self, instance, value: int) -> int:
        if value != 1:
            return 0
        count = self.views_count.value
        if count < 1:
            raise ValueError(f"VIEWS_COUNT is {count}: set the number of views to prepare (>= 1) first")
        angles = self.views_start.value + self.views_step.value * np.arange(count)
        await self.views_ready.write(0)
        started = time.monotonic()
        await self.camera.prepare_views(angles.tolist(), self.views_binning.value, self.views_ready.write)
        await self.prepare_time.write(round(time.monotonic() - started, 2))
        return 0

    @views_rendered.scan(period=VIEWS_RENDERED_SCAN_S)
    async def views_rendered(self, instance, async_lib) -> None:
        if instance.value != self.camera.views_rendered:
            await instance.write(self.camera.views_rendered)
