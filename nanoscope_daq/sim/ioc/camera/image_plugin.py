"""NDStdArrays preview (``<P>CAM:image1:``): binned, rate-limited frames for live display.

Channel Access carries previews only; the data of record goes through HDF1. The
newest frame wins: frames arriving between two previews are skipped (not queued),
so a slow display never holds the camera back.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty

from ....config import SimCameraConfig
from .params import param_group_class
from .plugin import PLUGIN_BASE_PARAMS, NDArray, NDPluginIOC

MAX_PREVIEW_PIXELS = 2048 * 2048
PREVIEW_BACKLOG = 3
"""Previews a slow client may fall behind by (the newest matters; bounds the server's memory)."""

_ImagePluginParams = param_group_class(
    "_ImagePluginParams", "NDStdArrays record set", PLUGIN_BASE_PARAMS, base=NDPluginIOC
)


def preview_factor(shape: tuple[int, int], max_size: int) -> int:
    """The least binning factor that fits a frame of ``shape`` into ``max_size`` pixels a side."""
    return max(1, math.ceil(max(shape) / max_size))


def bin_for_preview(frame: np.ndarray, max_size: int) -> np.ndarray:
    """Average ``f`` x ``f`` blocks, ``f`` the least factor fitting the frame in ``max_size``."""
    factor = preview_factor(frame.shape, max_size)
    if factor == 1:
        return frame.copy()
    rows, cols = frame.shape[0] // factor, frame.shape[1] // factor
    cropped = frame[: rows * factor, : cols * factor].astype(np.float32)
    along_cols = cropped.reshape(rows * factor, cols, factor).sum(axis=2)
    blocks = along_cols.reshape(rows, factor, cols).sum(axis=1)
    return np.rint(blocks / (factor * factor)).astype(frame.dtype)


class ImagePluginIOC(_ImagePluginParams):
    """NDStdArrays-compatible preview (stock ophyd ``ImagePlugin``)."""

    standard_interface = "areaDetector NDStdArrays plugin, binned preview (stock `ophyd ImagePlugin`)"
    plugin_type = "NDPluginStdArrays"

    array_data = pvproperty(
        name="ArrayData", value=[0], dtype=ChannelType.LONG, max_length=MAX_PREVIEW_PIXELS, read_only=True,
        doc="Binned preview pixels, row-major (ArraySize1_RBV rows of ArraySize0_RBV)",
        max_subscription_backlog=PREVIEW_BACKLOG,
    )

    def __init__(self, prefix: str, *, config: SimCameraConfig, **kwargs) -> None:
        super().__init__(prefix, port_name="IMAGE1", source_port=config.port_name, **kwargs)
        self.config = config
        self._latest: NDArray | None = None
        self._fresh = asyncio.Event()

    async def initialize(self) -> None:
        await super().initialize()
        await self.post("EnableCallbacks", "Enable", setpoint=True)
        asyncio.create_task(self._publish_previews())

    async def prime(self, shape: tuple[int, int]) -> None:
        """A black preview of the right size until the first frame arrives."""
        factor = preview_factor(shape, self.config.preview_max_size)
        rows, cols = shape[0] // factor, shape[1] // factor
        await self.array_data.write(np.zeros(rows * cols, dtype=np.int32))
        await super().prime((rows, cols))

    async def on_array(self, array: NDArray) -> None:
        """Keep the newest frame for the next preview; never waits."""
        self._latest = array
        self._fresh.set()

    async def _publish_previews(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._fresh.wait()
            self._fresh.clear()
            array = self._latest
            assert array is not None
            preview = await loop.run_in_executor(None, bin_for_preview, array.data, self.config.preview_max_size)
            await self.array_data.write(preview.astype(np.int32).ravel())
            binned = NDArray(array.unique_id, array.timestamp, preview, array.attributes, array.day, array.binning)
            await self.count_array(binned)
            interval = max(1.0 / self.config.preview_rate_hz, self.value("MinCallbackTime"))
            await asyncio.sleep(interval)
