"""NDPluginDriver: what every areaDetector plugin serves and does with an arriving array."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .params import DISABLE_ENABLE, NO_YES, Param, ParamGroup, on_put, plain, rbv, ro

AD_CORE_VERSION = "3.12.1"
DATA_TYPES = ("Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float32", "Float64")
COLOR_MODES = ("Mono", "Bayer", "RGB1", "RGB2", "RGB3", "YUV444", "YUV422", "YUV421")
EPICS_EPOCH_OFFSET_S = 631152000
"""POSIX time of the EPICS epoch (1990-01-01 UTC)."""


@dataclass(frozen=True)
class NDArray:
    """One frame as the driver passes it to its plugins."""

    unique_id: int
    timestamp: float
    """Exposure start, POSIX seconds."""
    data: np.ndarray
    attributes: Mapping[str, float]
    day: float
    """Study day the frame images (for the ground truth written next to the data)."""
    binning: int


def data_type_name(dtype: np.dtype) -> str:
    """areaDetector's name of a numpy dtype: uint16 -> UInt16."""
    name = np.dtype(dtype).name
    return "U" + name[1:].capitalize() if name.startswith("u") else name.capitalize()


PLUGIN_BASE_PARAMS: tuple[Param, ...] = (
    rbv("ArrayCounter", 0, "Arrays this plugin has processed"),
    ro("ArrayRate_RBV", 0.0, "Arrays processed per second", units="Hz"),
    plain("AsynIO", 0, "asyn record (not used by the simulator)"),
    plain("NDAttributesFile", "", "NDAttributes XML file (attributes are fixed in the simulator)", long=True,
          fixed=True),
    plain("NDAttributesMacros", "", "NDAttributes macros", long=True, fixed=True),
    plain("NDAttributesStatus", 0, "NDAttributes file status (0 OK)"),
    ro("PoolAllocBuffers", 0, "NDArray pool: buffers allocated"),
    ro("PoolFreeBuffers", 0, "NDArray pool: free buffers"),
    ro("PoolMaxBuffers", 0, "NDArray pool: buffer limit"),
    ro("PoolMaxMem", 0.0, "NDArray pool: memory limit", units="MB"),
    ro("PoolUsedBuffers", 0, "NDArray pool: buffers in use"),
    ro("PoolUsedMem", 0.0, "NDArray pool: memory in use", units="MB"),
    ro("PortName_RBV", "", "asyn port name of this plugin"),
    ro("PluginType_RBV", "", "Plugin type (ophyd checks it against its class)"),
    ro("ADCoreVersion_RBV", AD_CORE_VERSION, "ADCore version emulated"),
    ro("DriverVersion_RBV", AD_CORE_VERSION, "Plugin version emulated"),
    rbv("EnableCallbacks", "Disable", "Process arrays from NDArrayPort", enum=DISABLE_ENABLE),
    rbv("BlockingCallbacks", "No", "Yes: the driver waits until this plugin has processed each array", enum=NO_YES),
    rbv("NDArrayPort", "", "asyn port of the array source (the cam's PortName_RBV)"),
    rbv("NDArrayAddress", 0, "asyn address of the array source", fixed=True),
    rbv("MinCallbackTime", 0.0, "Least time between processed arrays (0: no limit)", units="s"),
    rbv("MaxArrayRate", 0.0, "Most arrays per second processed (0: no limit)", units="Hz"),
    plain("MaxArrayRate_COUT", 0.0, "Link output of MaxArrayRate"),
    rbv("MaxByteRate", 0.0, "Most bytes per second processed (0: no limit)", units="B/s", fixed=True),
    rbv("QueueSize", 1, "Arrays the plugin's input queue holds"),
    plain("QueueFree", 0, "Free places in the input queue"),
    plain("QueueFreeLow", 0, "Queue free low-alarm level"),
    plain("QueueUse", 0, "Arrays waiting in the input queue"),
    plain("QueueUseHIGH", 0, "Queue use high-alarm level"),
    plain("QueueUseHIHI", 0, "Queue use hihi-alarm level"),
    plain("NumQueuedArrays", 0, "Arrays queued or being processed"),
    plain("EmptyFreeList", 0, "Write 1 to free the plugin's unused buffers"),
    rbv("NumThreads", 1, "Plugin threads", fixed=True),
    ro("MaxThreads_RBV", 1, "Most plugin threads"),
    rbv("SortMode", "Unsorted", "Reorder arrays by UniqueId (arrays always arrive in order here)",
        enum=("Unsorted", "Sorted")),
    rbv("SortTime", 0.1, "Time an array may wait in the sort queue", units="s"),
    rbv("SortSize", 10, "Sort queue size"),
    plain("SortFree", 10, "Free places in the sort queue"),
    plain("SortFreeLow", 0, "Sort free low-alarm level"),
    rbv("DroppedArrays", 0, "Arrays the plugin received but did not process (reported, never silent)"),
    rbv("DisorderedArrays", 0, "Arrays received out of order"),
    rbv("DroppedOutputArrays", 0, "Output arrays dropped"),
    plain("ProcessPlugin", 0, "Write 1 to process the last array again"),
    ro("ExecutionTime_RBV", 0.0, "Time to process the last array", units="ms"),
    rbv("ArrayCallbacks", "Enable", "Pass arrays on to downstream plugins", enum=DISABLE_ENABLE),
    rbv("NDimensions", 2, "Dimensions of the last array"),
    rbv("Dimensions", 0, "Size of the last array's first dimension"),
    *(rbv(f"ArraySize{i}", 0, f"Size of dimension {i} of the last array") for i in range(10)),
    *(rbv(f"Dim{i}SA", 0, f"Dimension {i} of the last array") for i in range(10)),
    ro("ArraySizeX_RBV", 0, "Width of the last array"),
    ro("ArraySizeY_RBV", 0, "Height of the last array"),
    ro("ArraySizeZ_RBV", 0, "Depth of the last array"),
    ro("ArraySize_RBV", 0, "Bytes of the last array", units="B"),
    rbv("DataType", "UInt16", "Data type of the last array", enum=DATA_TYPES),
    rbv("ColorMode", "Mono", "Colour mode of the last array", enum=COLOR_MODES),
    ro("BayerPattern_RBV", "RGGB", "Bayer pattern", enum=("RGGB", "GBRG", "GRBG", "BGGR")),
    ro("UniqueId_RBV", 0, "UniqueId of the last array"),
    ro("TimeStamp_RBV", 0.0, "Time stamp of the last array (EPICS epoch)", units="s"),
    ro("EpicsTSSec_RBV", 0, "EPICS time stamp of the last array: seconds"),
    ro("EpicsTSNsec_RBV", 0, "EPICS time stamp of the last array: nanoseconds"),
)


class NDPluginIOC(ParamGroup):
    """Bookkeeping shared by the plugins: source port, enable, counters, last array's shape."""

    plugin_type = ""

    def __init__(self, prefix: str, *, port_name: str, source_port: str, **kwargs) -> None:
        super().__init__(prefix, **kwargs)
        self.port_name = port_name
        self.source_port = source_port
        self._counted = (0, time.monotonic())

    async def initialize(self) -> None:
        await self.post("PortName_RBV", self.port_name)
        await self.post("PluginType_RBV", self.plugin_type)
        await self.post("NDArrayPort", self.source_port, setpoint=True)

    async def prime(self, shape: tuple[int, int]) -> None:
        """Show an array shape before any frame arrives (so ophyd's HDF5 plugin is 'primed')."""
        rows, cols = shape
        await self._post_shape(rows, cols, 2)

    def accepts(self, source_port: str) -> bool:
        """Whether an array from ``source_port`` reaches this plugin."""
        return self.value("EnableCallbacks") == "Enable" and self.value("NDArrayPort") == source_port

    async def count_array(self, array: NDArray) -> None:
        """Update the counters and the last array's description."""
        rows, cols = array.data.shape
        await self.post("ArrayCounter", self.value("ArrayCounter") + 1)
        await self._post_shape(rows, cols, array.data.itemsize)
        await self.post("DataType", data_type_name(array.data.dtype), setpoint=True)
        await self.post("UniqueId_RBV", array.unique_id)
        epics_time = array.timestamp - EPICS_EPOCH_OFFSET_S
        await self.post("TimeStamp_RBV", epics_time)
        await self.post("EpicsTSSec_RBV", int(epics_time))
        await self.post("EpicsTSNsec_RBV", int(math.fmod(epics_time, 1.0) * 1e9))

    async def _post_shape(self, rows: int, cols: int, itemsize: int) -> None:
        for suffix, value in (("ArraySize0", cols), ("ArraySize1", rows), ("ArraySize2", 0), ("Dimensions", cols)):
            await self.post(suffix, value)
        await self.post("ArraySizeX_RBV", cols)
        await self.post("ArraySizeY_RBV", rows)
        await self.post("ArraySize_RBV", rows * cols * itemsize)

    async def housekeeping(self) -> None:
        """Periodic readbacks (the driver calls this once a second): ArrayRate_RBV."""
        count, since = self._counted
        now = time.monotonic()
        current = self.value("ArrayCounter")
        if now > since:
            await self.post("ArrayRate_RBV", round(max(current - count, 0) / (now - since), 2))
        self._counted = (current, now)

    @on_put("ArrayCounter")
    async def _reset_counter(self, value: int) -> int:
        self._counted = (value, time.monotonic())
        return value

    @on_put("NDArrayPort")
    async def _set_source(self, value: str) -> str:
        if value != self.source_port:
            raise ValueError(
                f"{self.prefix}NDArrayPort: no array source named {value!r}; this detector's driver port is "
                f"{self.source_port!r}"
            )
        return value
