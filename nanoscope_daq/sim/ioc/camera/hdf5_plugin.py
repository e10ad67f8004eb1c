"""NDFileHDF5 plugin (``<P>CAM:HDF1:``): file naming, capture modes and write status.

Files are written by :class:`~nanoscope_daq.sim.hdf5_writer.Hdf5FrameWriter`'s thread;
this group only decides what goes where and reports it. A frame the writer fails to
write is counted in DroppedArrays_RBV and explained in WriteStatus/WriteMessage.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import queue
import time
from pathlib import Path

from ....config import SimCameraConfig
from ...hdf5_writer import Compression, FileRequest, FileSummary, Frame, Hdf5FrameWriter, WriterError
from .frames import ATTRIBUTES
from .ground_truth import GroundTruthRecorder
from .params import DONE_CAPTURE, NO_YES, OK_ERROR, Param, on_put, param_group_class, plain, rbv, ro
from .plugin import PLUGIN_BASE_PARAMS, NDArray, NDPluginIOC

WRITE_MODES = ("Single", "Capture", "Stream")
COMPRESSIONS = ("None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG")
BLOSC_COMPRESSORS = ("BloscLZ", "LZ4", "LZ4HC", "SNAPPY", "ZLIB", "ZSTD")
EXTRA_DIMS = ("3", "4", "5", "6", "7", "8", "9", "X", "Y", "N")

FILE_PARAMS: tuple[Param, ...] = (
    rbv("FilePath", "", "Directory files are written to (a trailing / is added)", long=True),
    ro("FilePathExists_RBV", "No", "Whether FilePath exists on the IOC's file system", enum=NO_YES),
    rbv("CreateDirectory", 0, "Directory levels the IOC may create: -N the last N of FilePath, +N those below level N"),
    rbv("FileName", "", "Base name of the files", long=True),
    rbv("FileNumber", 0, "Number of the next file (FileTemplate's %d)"),
    rbv("FileTemplate", "%s%s_%3.3d.h5", "printf template of the file name from FilePath, FileName, FileNumber",
        long=True),
    rbv("AutoIncrement", "No", "Increment FileNumber after each file is opened", enum=NO_YES),
    rbv("AutoSave", "No", "Single mode: write every array as it arrives", enum=NO_YES),
    rbv("FileWriteMode", "Single",
        "Single: one file per array; Capture: buffer, then write; Stream: write as they come",
        enum=WRITE_MODES),
    rbv("NumCapture", 1, "Arrays to capture (Capture/Stream; 0 in Stream: until Capture=0)"),
    ro("NumCaptured_RBV", 0, "Arrays captured: written to the file (Stream) or buffered (Capture)"),
    rbv("Capture", "Done", "Start (Capture) or stop (Done) capturing; returns to Done when the file is closed",
        enum=DONE_CAPTURE),
    ro("FullFileName_RBV", "", "Path of the file being or last written", long=True),
    rbv("WriteFile", "Done", "Write the last array (Single) or the buffer (Capture) now", enum=("Done", "Write")),
    rbv("ReadFile", "Done", "Read a file back into an array (not supported)", enum=("Done", "Read"), fixed=True),
    plain("WriteStatus", "Ok", "Ok, or Error after a failed open, write or close", enum=OK_ERROR),
    plain("WriteMessage", "", "Reason of the last error, naming the file", long=True),
    rbv("FileFormat", 0, "File format (0: HDF5)", fixed=True),
    rbv("DeleteDriverFile", "No", "Delete the driver's file after reading it", enum=NO_YES, fixed=True),
    rbv("LazyOpen", "No", "Open the file on the first array instead of at Capture", enum=NO_YES),
    rbv("TempSuffix", "", "Suffix while writing (not supported: files carry their final name)", fixed=True),
)

HDF5_PARAMS: tuple[Param, ...] = (
    rbv("Compression", "None", "Codec: None, zlib, Blosc, BSLZ4 or LZ4 (N-bit, szip, JPEG are refused)",
        enum=COMPRESSIONS),
    rbv("ZLevel", 6, "zlib level 0-9"),
    rbv("BloscCompressor", "LZ4", "Blosc compressor", enum=BLOSC_COMPRESSORS),
    rbv("BloscLevel", 5, "Blosc level 0-9"),
    rbv("BloscShuffle", "Bit", "Blosc shuffle", enum=("None", "Byte", "Bit")),
    rbv("SZipNumPixels", 16, "szip pixels per block", fixed=True),
    rbv("NumDataBits", 0, "N-bit data bits", fixed=True),
    rbv("DataBitsOffset", 0, "N-bit offset", fixed=True),
    rbv("SWMRMode", "Off", "Single-writer/multiple-reader: readers may open the file while it grows",
        enum=("Off", "On")),
    ro("SWMRSupported_RBV", "Supported", "SWMR support", enum=("Not Supported", "Supported")),
    ro("SWMRActive_RBV", "Off", "A SWMR file is open", enum=("Off", "Active")),
    ro("SWMRCbCounter_RBV", 0, "Flushes of the SWMR file so far"),
    rbv("NumFramesFlush", 0, "Flush to disk every N frames (0: on close)"),
    rbv("NumFramesChunks", 1, "Frames per HDF5 chunk"),
    rbv("NumRowChunks", 0, "Rows per chunk (0: whole frame)", fixed=True),
    rbv("NumColChunks", 0, "Columns per chunk (0: whole frame)", fixed=True),
    rbv("NDAttributeChunk", 0, "Chunk size of the NDAttribute datasets (0: default)"),
    rbv("BoundaryAlign", 0, "Align chunks to this boundary (0: off)", fixed=True),
    rbv("BoundaryThreshold", 65536, "Align objects larger than this", fixed=True),
    rbv("StoreAttr", "Yes", "Store the instrument's NDAttributes per frame", enum=NO_YES),
    rbv("StorePerform", "No", "Store performance datasets", enum=NO_YES, fixed=True),
    rbv("DimAttDatasets", "No", "Store attributes with extra dimensions", enum=NO_YES, fixed=True),
    rbv("FillValue", 0.0, "Fill value of the datasets", fixed=True),
    rbv("PositionMode", "Off", "Position-based placement of frames", enum=("Off", "On"), fixed=True),
    rbv("NumExtraDims", 0, "Extra dimensions beyond N frames", fixed=True),
    *(rbv(f"ExtraDimSize{d}", 1, f"Size of extra dimension {d}", fixed=True) for d in EXTRA_DIMS),
    *(ro(f"ExtraDimName{d}_RBV", "", f"Name of extra dimension {d}") for d in EXTRA_DIMS),
    *(rbv(f"ExtraDimChunk{d}", 1, f"Chunking of extra dimension {d}", fixed=True) for d in EXTRA_DIMS[:-1]),
    *(rbv(f"PosIndexDim{d}", "", f"Position index of dimension {d}", fixed=True) for d in EXTRA_DIMS),
    *(rbv(f"PosNameDim{d}", "", f"Position name of dimension {d}", fixed=True) for d in EXTRA_DIMS),
    rbv("XMLFileName", "", "XML layout file (the default areaDetector layout is written)", long=True, fixed=True),
    ro("XMLValid_RBV", "Yes", "XML layout valid", enum=NO_YES),
    ro("XMLErrorMsg_RBV", "", "XML layout error", long=True),
    plain("IOSpeed", 0.0, "Write speed of the last file", units="MB/s"),
    plain("RunTime", 0.0, "Time from open to close of the last file", units="s"),
)

_HDF5PluginParams = param_group_class(
    "_HDF5PluginParams", "NDFileHDF5 record set", PLUGIN_BASE_PARAMS, FILE_PARAMS, HDF5_PARAMS, base=NDPluginIOC
)


class CreationNotAllowed(OSError):
    """FilePath does not exist and CreateDirectory does not allow creating it."""


def create_directories(path: Path, depth: int) -> None:
    """Create ``path`` as NDPluginFile's CreateDirectory allows, or raise OSError saying why not.

    ``depth`` < 0: the last ``-depth`` levels of the path may be created; > 0: levels
    below level ``depth`` may; 0: none.
    """
    if path.is_dir():
        return
    levels = len(path.parts) - 1
    must_exist = depth if depth > 0 else levels + depth
    missing = path
    while not missing.parent.is_dir() and missing.parent != missing:
        missing = missing.parent
    missing_level = len(missing.parts) - 1
    if depth == 0 or missing_level <= must_exist:
        raise CreationNotAllowed(
            f"directory {missing} does not exist and CreateDirectory={depth} does not allow creating it; "
            "create it or set CreateDirectory (e.g. -3 for the last three levels)"
        )
    os.makedirs(path, exist_ok=True)


class HDF5PluginIOC(_HDF5PluginParams):
    """NDFileHDF5-compatible file writer (stock ophyd ``HDF5Plugin_V34``)."""

    standard_interface = "areaDetector NDFileHDF5 plugin (stock `ophyd HDF5Plugin_V34`)"
    plugin_type = "NDFileHDF5"

    def __init__(
        self, prefix: str, *, config: SimCameraConfig, data_dir: Path, ground_truth: GroundTruthRecorder, **kwargs
    ) -> None:
        super().__init__(prefix, port_name="HDF1", source_port=config.port_name, **kwargs)
        self.config = config
        self.data_dir = data_dir
        self.ground_truth = ground_truth
        self.writer: Hdf5FrameWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capturing = False
        self._file_open = False
        self._opened_at = 0.0
        self._target = 0
        self._accepted = 0
        """Frames taken into the present capture."""
        self._captured = 0
        """NumCaptured_RBV: frames written to the file (Stream) or buffered (Capture)."""
        self._dropped = 0
        """DroppedArrays: frames that reached the plugin to be written but are not in a file."""
        self._flushes = 0
        self._buffered: list[NDArray] = []
        self._last: NDArray | None = None
        self._closing: asyncio.Task | None = None
        self._counting: set[asyncio.Task] = set()
        self._submit_lock = asyncio.Lock()

    async def initialize(self) -> None:
        await super().initialize()
        self._loop = asyncio.get_running_loop()
        self.writer = Hdf5FrameWriter(self.config.writer_queue_frames, on_error=self._writer_error, name="HDF1-writer")
        atexit.register(self.writer.stop)
        await self.post("QueueSize", self.config.writer_queue_frames, setpoint=True)
        await self.post("EnableCallbacks", "Enable", setpoint=True)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)  # the IOC's data directory (--data-dir)
        except OSError as exc:
            await self._error(f"cannot create the data directory {self.data_dir}: {exc.strerror or exc}")
        await self.post("FilePath", await self._check_path(str(self.data_dir)), setpoint=True)

    # -- paths and names -------------------------------------------------------------

    async def _check_path(self, path: str, *, for_writing: bool = False) -> str:
        """Normalise FilePath, create it if CreateDirectory allows, and post FilePathExists.

        A directory that may not be created yet is only an error when a file is to be
        written (``for_writing``: raises); one that cannot be created or written is reported.
        """
        normalised = os.path.join(os.path.expanduser(path), "")
        target = Path(normalised)
        try:
            create_directories(target, self.value("CreateDirectory"))
        except CreationNotAllowed as exc:
            if for_writing:
                raise OSError(f"FilePath {normalised}: {exc}") from None
        except OSError as exc:
            await self._error(f"FilePath {normalised}: {exc.strerror or exc}")
        exists = target.is_dir()
        await self.post("FilePathExists_RBV", "Yes" if exists else "No")
        if exists and not os.access(target, os.W_OK | os.X_OK):
            await self._error(f"FilePath {normalised} is not writable by the IOC")
        return normalised

    @on_put("FilePath")
    async def _set_path(self, value: str) -> str:
        return await self._check_path(value)

    @on_put("FileTemplate")
    async def _set_template(self, value: str) -> str:
        try:
            value % ("/", "name", 0)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"FileTemplate {value!r} cannot format (path, name, number): {exc}; e.g. '%s%s_%6.6d.h5'"
            ) from None
        return value

    def _next_file_name(self) -> str:
        return self.value("FileTemplate") % (self.value("FilePath"), self.value("FileName"), self.value("FileNumber"))

    @on_put("FileWriteMode")
    async def _set_mode(self, value: str) -> str:
        if self._capturing:
            raise ValueError("FileWriteMode cannot change while capturing; set Capture=0 first")
        return value

    @on_put("DroppedArrays")
    async def _reset_dropped(self, value: int) -> int:
        self._dropped = value
        return value

    # -- compression -----------------------------------------------------------------

    @on_put("Compression")
    async def _set_compression(self, value: str) -> str:
        self._compression(codec=value)
        return value

    @on_put("ZLevel")
    async def _set_zlevel(self, value: int) -> int:
        self._compression(zlevel=value)
        return value

    @on_put("BloscLevel")
    async def _set_blosc_level(self, value: int) -> int:
        self._compression(blosc_level=value)
        return value

    def _compression(self, **override) -> Compression:
        """The compression settings (with ``override``); ValueError names a bad one."""
        settings = dict(
            codec=self.value("Compression"),
            zlevel=self.value("ZLevel"),
            blosc_compressor=self.value("BloscCompressor").lower(),
            blosc_level=self.value("BloscLevel"),
            blosc_shuffle=self.value("BloscShuffle"),
        )
        settings.update(override)
        return Compression(**settings)

    def _file_request(self, path: str) -> FileRequest:
        return FileRequest(
            path=Path(path),
            compression=self._compression(),
            swmr=self.value("SWMRMode") == "On",
            frames_per_flush=self.value("NumFramesFlush"),
            frames_per_chunk=self.value("NumFramesChunks"),
            attributes=ATTRIBUTES,
        )

    # -- status ----------------------------------------------------------------------

    async def refused(self, message: str) -> None:
        await self._error(message)

    async def _error(self, message: str) -> None:
        await self.post("WriteMessage", message[:1000])
        await self.post("WriteStatus", "Error")

    def _writer_error(self, message: str) -> None:
        """Called in the writer thread at a file's first failure."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._error(message), self._loop)

    async def _count_dropped(self, frames: int) -> None:
        self._dropped += frames
        await self.post("DroppedArrays", self._dropped, setpoint=True)

    # -- opening and closing -----------------------------------------------------------

    async def _open(self) -> None:
        """Open the next file (FullFileName, FileNumber), or raise after reporting why not."""
        assert self.writer is not None
        try:
            name = self._next_file_name()
            await self._check_path(self.value("FilePath"), for_writing=True)
            request = self._file_request(name)
            await asyncio.wrap_future(self.writer.open(request))
        except (OSError, ValueError, TypeError) as exc:
            await self._error(str(exc))
            raise
        self._file_open = True
        self._opened_at = time.monotonic()
        await self.post("FullFileName_RBV", name)
        await self.post("WriteStatus", "Ok")
        await self.post("WriteMessage", "")
        await self.post("SWMRActive_RBV", "Active" if request.swmr else "Off")
        if self.value("AutoIncrement") == "Yes":
            await self.post("FileNumber", self.value("FileNumber") + 1, setpoint=True)

    async def _close(self) -> None:
        """Close the file once the frames queued for it are written; post RunTime and IOSpeed."""
        assert self.writer is not None
        if not self._file_open:
            return
        self._file_open = False
        summary: FileSummary | None = await asyncio.wrap_future(self.writer.close())
        await self.post("SWMRActive_RBV", "Off")
        if summary is not None:
            elapsed = max(time.monotonic() - self._opened_at, 1e-9)
            size = summary.path.stat().st_size if summary.path.exists() else 0
            await self.post("RunTime", round(elapsed, 3))
            await self.post("IOSpeed", round(size / elapsed / 1e6, 1))

    # -- capture -----------------------------------------------------------------------

    @on_put("Capture")
    async def _set_capture(self, value: str) -> str:
        if value == "Capture":
            await self._start_capture()
            return "Capture"
        if self._closing is not None:
            await asyncio.shield(self._closing)
        await self._end_capture()
        return "Done"

    async def _start_capture(self) -> None:
        if self._capturing:
            return
        mode = self.value("FileWriteMode")
        if mode == "Single":
            raise ValueError("Capture needs FileWriteMode Capture or Stream; in Single mode use AutoSave or WriteFile")
        target = self.value("NumCapture")
        if mode == "Capture":
            if target < 1:
                raise ValueError("Capture mode needs NumCapture >= 1 (frames are buffered until then)")
            frame_bytes = self.value("ArraySize_RBV") or 1
            if target * frame_bytes > self.config.capture_memory_mb * 1e6:
                raise ValueError(
                    f"NumCapture={target} frames of {frame_bytes / 1e6:.1f} MB exceed the capture buffer "
                    f"({self.config.capture_memory_mb} MB, sim.camera.capture_memory_mb); use Stream mode"
                )
        elif self.value("LazyOpen") == "No":
            await self._open()
        self._capturing = True
        self._target = target
        self._accepted = 0
        self._captured = 0
        self._buffered = []
        await self.post("NumCaptured_RBV", 0)

    async def _end_capture(self) -> None:
        """Stop taking frames, write what was captured and close; Capture returns to Done."""
        if not self._capturing:
            return
        self._capturing = False
        if self.value("FileWriteMode") == "Capture":
            await self._write_buffer()
        else:
            async with self._submit_lock:
                await self._close()
        await asyncio.gather(*self._counting)
        await self.post("Capture", "Done", setpoint=True)

    async def _end_capture_in_background(self) -> None:
        try:
            await self._end_capture()
        finally:
            self._closing = None

    async def _write_buffer(self) -> None:
        frames, self._buffered = self._buffered, []
        if not frames:
            return
        try:
            await self._open()
        except (OSError, ValueError, TypeError):
            await self._count_dropped(len(frames))
            return
        for array in frames:
            await self._submit(array, wait=True)
        await self._close()

    # -- arrays ------------------------------------------------------------------------

    async def on_array(self, array: NDArray) -> None:
        """An array from the driver; returns once it is queued (or written, with BlockingCallbacks)."""
        await self.count_array(array)
        self._last = array
        blocking = self.value("BlockingCallbacks") == "Yes"
        mode = self.value("FileWriteMode")
        if mode == "Single":
            if self.value("AutoSave") == "Yes":
                await self._write_single(array)
            return
        if not self._capturing or self._closing is not None:
            return
        self._accepted += 1
        if mode == "Capture":
            self._buffered.append(array)
            self._captured += 1
            await self.post("NumCaptured_RBV", self._captured)
        else:
            if not self._file_open:
                try:
                    await self._open()
                except (OSError, ValueError, TypeError):
                    self._capturing = False
                    await self._count_dropped(1)
                    await self.post("Capture", "Done", setpoint=True)
                    return
            await self._submit(array, wait=blocking)
        if self._target and self._accepted >= self._target:
            if blocking:
                await self._end_capture()
            else:
                self._closing = asyncio.create_task(self._end_capture_in_background())

    async def _write_single(self, array: NDArray) -> None:
        try:
            await self._open()
        except (OSError, ValueError, TypeError):
            await self._count_dropped(1)
            return
        await self._submit(array, wait=True)
        await self._close()

    @on_put("WriteFile")
    async def _write_now(self, value: str) -> str:
        if value != "Write":
            return "Done"
        mode = self.value("FileWriteMode")
        if mode == "Single":
            if self._last is None:
                raise ValueError("WriteFile: no array has arrived yet")
            await self._write_single(self._last)
        elif mode == "Capture":
            await self._write_buffer()
        else:
            raise ValueError("WriteFile does not apply in Stream mode (frames are written as they arrive)")
        return "Done"

    async def _submit(self, array: NDArray, *, wait: bool) -> None:
        """Hand ``array`` to the writer in arrival order, waiting while its queue is full."""
        assert self.writer is not None
        attributes = dict(array.attributes) if self.value("StoreAttr") == "Yes" else {}
        frame = Frame(array.unique_id, array.timestamp, array.data, attributes)
        async with self._submit_lock:
            try:
                future = self.writer.submit(frame, block=False)
            except queue.Full:
                future = await asyncio.get_running_loop().run_in_executor(None, self.writer.submit, frame)
        xray_kv = array.attributes["SourceVoltage"] if array.attributes["SourceCurrent"] > 0 else None
        self.ground_truth.request(Path(self.value("FullFileName_RBV")).parent, array.day, array.binning, xray_kv)
        counting = asyncio.create_task(self._count_written(asyncio.wrap_future(future)))
        self._counting.add(counting)
        counting.add_done_callback(self._counting.discard)
        if wait:
            await counting

    async def _count_written(self, written: asyncio.Future) -> None:
        """Once the writer is done with a frame: count it captured, or dropped."""
        await asyncio.wait([written])
        error = written.exception()
        if error is not None:
            await self._count_dropped(1)
            if not isinstance(error, WriterError):
                await self._error(f"unexpected writer failure: {error!r}")
            return
        if self.value("FileWriteMode") == "Stream":
            self._captured += 1
            await self.post("NumCaptured_RBV", self._captured)
        every = self.value("NumFramesFlush")
        if every and self.value("SWMRMode") == "On" and (written.result() + 1) % every == 0:
            self._flushes += 1
            await self.post("SWMRCbCounter_RBV", self._flushes)

    async def housekeeping(self) -> None:
        """Also the writer queue: frames waiting for the writer thread (QueueUse, QueueFree)."""
        await super().housekeeping()
        if self.writer is not None:
            used = self.writer.queued
            await self.post("QueueUse", used)
            await self.post("NumQueuedArrays", used)
            await self.post("QueueFree", self.writer.capacity - used)
