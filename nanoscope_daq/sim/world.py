"""The one world every simulated IOC shares: clock, stages, source, load, mouse."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from .clock import SimClock
from .imaging.imager import Imager
from .models.loadcell import LoadFrameModel
from .models.motion import Axis
from .models.physiology import PhysiologyModel
from .models.source import SourceModel


@dataclass
class World:
    """State shared by the IOCs, so the camera images what stages, load and breath do."""

    config: Config
    clock: SimClock
    axes: dict[str, Axis]
    source: SourceModel
    loadframe: LoadFrameModel
    physiology: PhysiologyModel
    imager: Imager
    study_day: float = 0.0
    """Study day of the simulated mouse the camera images (set through ``<P>SIM:DAY``)."""

    @classmethod
    def from_config(cls, config: Config) -> World:
        clock = SimClock(config.sim.time_scale)
        return cls(
            config=config,
            clock=clock,
            axes={name: Axis(axis_cfg, clock) for name, axis_cfg in config.stages.axes().items()},
            source=SourceModel(config.source, config.sim.source, clock),
            loadframe=LoadFrameModel(config.loadcell, config.sim.specimen, clock, seed=config.sim.seed),
            physiology=PhysiologyModel(config.sim.physiology, config.physiology, clock, seed=config.sim.seed),
            imager=Imager(config),
        )
