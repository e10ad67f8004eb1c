"""The sCMOS camera's IOCs: ADAndor3 driver (cam1), NDFileHDF5 (HDF1), NDStdArrays (image1)."""

from __future__ import annotations

from caproto.server import PVGroup

from ...world import World
from ..pso import TriggerLine
from .cam import Andor3CamIOC
from .ground_truth import GroundTruthRecorder
from .hdf5_plugin import HDF5PluginIOC
from .image_plugin import ImagePluginIOC

__all__ = ["Andor3CamIOC", "HDF5PluginIOC", "ImagePluginIOC", "camera_iocs"]


def camera_iocs(prefix: str, world: World, trigger_input: TriggerLine) -> list[PVGroup]:
    """The camera's PV groups under ``prefix`` (e.g. ``NS:CAM:``), the driver first.

    ``trigger_input`` is the line the External trigger modes listen to (the PSO's output).
    """
    config = world.config.sim.camera
    ground_truth = GroundTruthRecorder(world.config)
    cam = Andor3CamIOC(prefix + "cam1:", world, trigger_input=trigger_input, ground_truth=ground_truth)
    hdf = HDF5PluginIOC(
        prefix + "HDF1:", config=config, data_dir=world.config.paths.data_path, ground_truth=ground_truth
    )
    image = ImagePluginIOC(prefix + "image1:", config=config)
    cam.attach(hdf)
    cam.attach(image)
    return [cam, hdf, image]
