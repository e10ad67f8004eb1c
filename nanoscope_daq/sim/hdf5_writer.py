"""Writes camera frames to areaDetector-layout HDF5 files from one worker thread.

The event loop serving Channel Access never touches a file: it queues commands
(open, frame, close) and the worker executes them in order. The queue is bounded,
so a producer faster than the disk is held back (back-pressure) instead of losing
frames; a frame that cannot be written (disk full, file too large, I/O error) is
counted in :attr:`Hdf5FrameWriter.frames_dropped` and reported with the reason,
never dropped silently.

File layout (NDFileHDF5's default, without an XML layout file)::

    /entry                              NXentry
    /entry/data/data                    frames, N x rows x cols
    /entry/instrument/detector/data     hard link to the frames
    /entry/instrument/NDAttributes/<n>  one value per frame: NDArrayUniqueId,
                                        NDArrayTimeStamp and the instrument's attributes
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

BLOSC_COMPRESSORS = ("blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd")
BLOSC_SHUFFLES = {
    "None": hdf5plugin.Blosc.NOSHUFFLE,
    "Byte": hdf5plugin.Blosc.SHUFFLE,
    "Bit": hdf5plugin.Blosc.BITSHUFFLE,
}
CODECS = ("None", "zlib", "Blosc", "BSLZ4", "LZ4")
"""Codecs this writer supports: NDFileHDF5's, less N-bit, szip and JPEG."""


class WriterError(OSError):
    """A file could not be opened, written or closed; the message says which and why."""


@dataclass(frozen=True)
class Compression:
    """NDFileHDF5's compression settings (Compression, ZLevel, Blosc*)."""

    codec: str = "None"
    zlevel: int = 6
    blosc_compressor: str = "lz4"
    blosc_level: int = 5
    blosc_shuffle: str = "Bit"

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"compression {self.codec!r} is not supported; choose one of {', '.join(CODECS)}")
        if not 0 <= self.zlevel <= 9:
            raise ValueError(f"zlib level {self.zlevel} must be between 0 and 9")
        if self.blosc_compressor not in BLOSC_COMPRESSORS:
            raise ValueError(
                f"Blosc compressor {self.blosc_compressor!r} must be one of {', '.join(BLOSC_COMPRESSORS)}"
            )
        if not 0 <= self.blosc_level <= 9:
            raise ValueError(f"Blosc level {self.blosc_level} must be between 0 and 9")
        if self.blosc_shuffle not in BLOSC_SHUFFLES:
            raise ValueError(f"Blosc shuffle {self.blosc_shuffle!r} must be one of {', '.join(BLOSC_SHUFFLES)}")

    def dataset_options(self) -> dict[str, Any]:
        """Keyword arguments of ``h5py.Group.create_dataset`` for this codec."""
        if self.codec == "zlib":
            return {"compression": "gzip", "compression_opts": self.zlevel}
        if self.codec == "Blosc":
            return dict(
                hdf5plugin.Blosc(
                    cname=self.blosc_compressor, clevel=self.blosc_level, shuffle=BLOSC_SHUFFLES[self.blosc_shuffle]
                )
            )
        if self.codec == "BSLZ4":
            return dict(hdf5plugin.Bitshuffle(cname="lz4"))
        if self.codec == "LZ4":
            return dict(hdf5plugin.LZ4())
        return {}


@dataclass(frozen=True)
class AttributeInfo:
    """Description and units stored with one NDAttribute dataset."""

    description: str
    units: str = ""


@dataclass(frozen=True)
class FileRequest:
    """One file to open: where, how to compress and when to flush."""

    path: Path
    compression: Compression = Compression()
    swmr: bool = False
    """Single-writer/multiple-reader: readers may open the file while it grows."""
    frames_per_flush: int = 0
    """Flush data and attributes to disk every this many frames (NumFramesFlush); 0: on close."""
    frames_per_chunk: int = 1
    attributes: Mapping[str, AttributeInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    """One detector frame and the values recorded with it."""

    unique_id: int
    timestamp: float
    """Exposure start, POSIX seconds."""
    data: np.ndarray
    attributes: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FileSummary:
    """What a closed file holds."""

    path: Path
    frames_written: int
    frames_dropped: int
    error: str | None


_STOP = object()


class _OpenFile:
    """State of the file being written (lives in the worker thread only)."""

    def __init__(self, request: FileRequest) -> None:
        self.request = request
        # No chunk cache for one-frame chunks: each frame reaches the disk when written, so a
        # full disk fails that frame's write (and HDF5 keeps no unwritable chunk to flush later).
        self.h5 = h5py.File(
            request.path,
            "w",
            libver="latest" if request.swmr else "earliest",
            rdcc_nbytes=0 if request.frames_per_chunk <= 1 else 64 * 1024 * 1024,
        )
        self.frames: h5py.Dataset | None = None
        self.direct = False
        self.attr_datasets: dict[str, h5py.Dataset] = {}
        self.attr_values: dict[str, list[float]] = {}
        self.written = 0
        self.flushed = 0
        self.dropped = 0
        self.error: str | None = None
        entry = self.h5.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_group("data").attrs["NX_class"] = "NXdata"
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        instrument.create_group("detector").attrs["NX_class"] = "NXdetector"
        instrument.create_group("NDAttributes").attrs["NX_class"] = "NXcollection"

    def create_datasets(self, frame: Frame) -> None:
        """Datasets shaped by the first frame; SWMR starts once they all exist."""
        rows, cols = frame.data.shape
        entry = self.h5["entry"]
        chunk_frames = max(1, self.request.frames_per_chunk)
        self.frames = entry["data"].create_dataset(
            "data",
            shape=(0, rows, cols),
            maxshape=(None, rows, cols),
            chunks=(chunk_frames, rows, cols),
            dtype=frame.data.dtype,
            **self.request.compression.dataset_options(),
        )
        self.frames.attrs["signal"] = 1
        self.direct = chunk_frames == 1 and self.request.compression.codec == "None"
        entry["instrument/detector/data"] = self.frames
        names = ["NDArrayUniqueId", "NDArrayTimeStamp", *frame.attributes]
        group = entry["instrument/NDAttributes"]
        for name in names:
            dtype = np.int64 if name == "NDArrayUniqueId" else np.float64
            dset = group.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(1024,), dtype=dtype)
            info = self.request.attributes.get(name)
            if info is not None:
                dset.attrs["NDAttrDescription"] = info.description
                if info.units:
                    dset.attrs["units"] = info.units
            self.attr_datasets[name] = dset
            self.attr_values[name] = []
        if self.request.swmr:
            self.h5.swmr_mode = True

    def append(self, frame: Frame) -> None:
        if self.frames is None:
            self.create_datasets(frame)
        assert self.frames is not None
        if frame.data.shape != self.frames.shape[1:] or frame.data.dtype != self.frames.dtype:
            raise WriterError(
                f"frame {frame.unique_id} is {frame.data.shape} {frame.data.dtype} but {self.request.path} holds "
                f"{self.frames.shape[1:]} {self.frames.dtype}; stop capture before changing binning, ROI or encoding"
            )
        missing = set(self.attr_values) - {"NDArrayUniqueId", "NDArrayTimeStamp", *frame.attributes}
        if missing:
            raise WriterError(f"frame {frame.unique_id} lacks the attributes {sorted(missing)}")
        index = self.written
        self.frames.resize(index + 1, axis=0)
        try:
            if self.direct:
                # Uncompressed one-frame chunks: the frame's bytes are the chunk, written as is.
                self.frames.id.write_direct_chunk((index, 0, 0), np.ascontiguousarray(frame.data))
            else:
                self.frames[index] = frame.data
        except BaseException:
            self._shrink_to(index)
            raise
        self.written += 1
        values = self.attr_values
        values["NDArrayUniqueId"].append(frame.unique_id)
        values["NDArrayTimeStamp"].append(frame.timestamp)
        for name, value in frame.attributes.items():
            if name in values:
                values[name].append(value)

    def _shrink_to(self, frames: int) -> None:
        """Leave no unwritten frame in the dataset after a failed write, if HDF5 still can.

        A failing file may refuse this too; the write's own error is the one worth reporting.
        """
        try:
            self.frames.resize(frames, axis=0)
        except (OSError, ValueError, RuntimeError):
            pass

    @property
    def flush_due(self) -> bool:
        every = self.request.frames_per_flush
        return bool(every) and self.written - self.flushed >= every

    def flush(self) -> None:
        """Write the attributes gathered since the last flush, then flush the file."""
        start, stop = self.flushed, self.written
        if stop > start:
            for name, dset in self.attr_datasets.items():
                dset.resize(stop, axis=0)
                dset[start:stop] = np.asarray(self.attr_values[name][start:stop], dtype=dset.dtype)
        self.flushed = stop
        self.h5.flush()

    def close(self) -> None:
        """Flush what was written (also after an error: those frames are good), then close."""
        try:
            self.flush()
        finally:
            self.h5.close()


def _describe(exc: BaseException, action: str, path: Path) -> str:
    """A one-line reason naming the file and the operating system's error (from HDF5's text)."""
    text = str(exc)
    marker = "error message = '"
    reason = text.split(marker, 1)[1].split("'", 1)[0] if marker in text else text
    return f"cannot {action} {path}: {reason}"


class Hdf5FrameWriter:
    """A worker thread that owns the HDF5 files: open, append frames, close.

    Commands run in submission order and each returns a ``Future``. :meth:`submit`
    blocks while ``queue_frames`` commands wait (back-pressure). The first failure of
    a file is also passed to ``on_error`` (called in the worker thread), so a failed
    flush is reported at once, not only when the next frame comes.
    """

    def __init__(
        self, queue_frames: int, *, on_error: Callable[[str], None] | None = None, name: str = "hdf5-writer"
    ) -> None:
        if queue_frames < 1:
            raise ValueError(f"queue_frames must be >= 1, got {queue_frames}")
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._on_error = on_error
        self._file: _OpenFile | None = None
        self.frames_written = 0
        """Frames written since the writer started, over all files."""
        self.frames_dropped = 0
        """Frames that reached the writer but are not in a file (each reported with its reason)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Commands waiting for the worker (frames, mostly)."""
        return self._queue.qsize()

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    def open(self, request: FileRequest) -> Future[Path]:
        """Open (truncate) ``request.path``; closes a file left open first."""
        return self._put(self._do_open, request, block=True, timeout=None)

    def submit(self, frame: Frame, *, block: bool = True, timeout: float | None = None) -> Future[int]:
        """Queue ``frame`` for the open file; the future gives its index in the file.

        Raises ``queue.Full`` when not blocking (or timing out) with the queue full.
        """
        return self._put(self._do_frame, frame, block=block, timeout=timeout)

    def close(self) -> Future[FileSummary | None]:
        """Close the open file once every frame queued before is written.

        The summary's ``error`` is the first failure of that file, if any; None if no file was open.
        """
        return self._put(self._do_close, None, block=True, timeout=None)

    def stop(self, timeout: float = 30.0) -> None:
        """Close any open file and end the worker thread."""
        if self._thread.is_alive():
            self.close()
            self._queue.put((_STOP, None, None))
            self._thread.join(timeout)

    def _put(self, work: Callable[[Any], Any], payload: Any, *, block: bool, timeout: float | None) -> Future:
        if not self._thread.is_alive():
            raise RuntimeError("the HDF5 writer thread has stopped")
        future: Future = Future()
        self._queue.put((work, payload, future), block=block, timeout=timeout)
        return future

    def _run(self) -> None:
        while True:
            work, payload, future = self._queue.get()
            if work is _STOP:
                return
            try:
                result = work(payload)
            except BaseException as exc:  # noqa: BLE001 -- reported through the future, never fatal to the worker
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _fail(self, current: _OpenFile, message: str) -> None:
        if current.error is None:
            current.error = message
            if self._on_error is not None:
                self._on_error(message)

    def _do_open(self, request: FileRequest) -> Path:
        self._do_close(None)
        try:
            self._file = _OpenFile(request)
        except (OSError, ValueError) as exc:
            message = _describe(exc, "create", request.path)
            if self._on_error is not None:
                self._on_error(message)
            raise WriterError(message) from None
        return request.path

    def _do_frame(self, frame: Frame) -> int:
        current = self._file
        if current is None:
            self.frames_dropped += 1
            raise WriterError(f"frame {frame.unique_id} arrived with no file open; it was not written")
        if current.error is None:
            try:
                current.append(frame)
            except WriterError as exc:
                self._fail(current, str(exc))
            except (OSError, ValueError, RuntimeError) as exc:
                self._fail(current, _describe(exc, "write to", current.request.path))
            else:
                self.frames_written += 1
                if current.flush_due:
                    try:
                        current.flush()
                    except (OSError, ValueError, RuntimeError) as exc:
                        self._fail(current, _describe(exc, "flush", current.request.path))
                return current.written - 1
        current.dropped += 1
        self.frames_dropped += 1
        raise WriterError(f"frame {frame.unique_id} not written: {current.error}")

    def _do_close(self, _: None) -> FileSummary | None:
        current, self._file = self._file, None
        if current is None:
            return None
        try:
            current.close()
        except (OSError, ValueError, RuntimeError) as exc:
            self._fail(current, _describe(exc, "close", current.request.path))
        return FileSummary(current.request.path, current.written, current.dropped, current.error)
