"""The camera file of a run, announced as bluesky stream assets while the IOC writes it.

:class:`FrameCapture` drives the HDF5 plugin in Stream mode (one file per run, SWMR,
flushed every frame) and is a bluesky *collectable*: ``describe_collect`` names the
datasets of the file (frames and per-frame NDAttributes, docs/documents.md) and
``collect_asset_docs`` yields ``stream_resource`` / ``stream_datum`` documents for the
frames written since the last collect. Which stream (darks, flats, projections) the
frames belong to is set with :meth:`FrameCapture.select` before they are acquired.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from event_model import ComposeStreamResource, StreamRange
from ophyd.status import StatusBase

from ..documents import ATTRIBUTE_KEYS, datasets
from .detector import CREATE_DIRECTORY_DEPTH, XrmDetector, path_template
from .signals import condition_status, done_status, progress_status, put_completed, puts_in_order, then

FILE_TEMPLATE = "%s%s.h5"


class CaptureError(RuntimeError):
    """The camera file could not be opened, or frames did not reach it."""


@dataclass
class Segment:
    """Frames ``start`` .. ``stop`` of the camera file belong to ``stream``."""

    stream: str
    start: int
    stop: int | None = None
    announced: int = field(init=False)

    def __post_init__(self) -> None:
        self.announced = self.start


class FrameCapture:
    """One HDF5 camera file per run, its frames announced per stream in chunks."""

    def __init__(self, det: XrmDetector, data_dir: str | os.PathLike, *, flush_frames: int = 1,
                 delivery_timeout_s: float = 600.0) -> None:
        self.det = det
        self.name = f"{det.name}_capture"
        self.parent = None
        self.data_dir = Path(data_dir).expanduser()
        self.flush_frames = flush_frames
        self.delivery_timeout_s = delivery_timeout_s
        """Longest a frame may take from exposure to the file (the simulator renders after exposing)."""
        self.directory = ""
        self._stem = ""
        """The file name prepare() told the IOC to write (before the IOC's template adds to it)."""
        self.path: Path | None = None
        self.segments: list[Segment] = []
        self._resources: dict[tuple[str, str], object] = {}
        self.expected = 0
        """Frames the camera was made to take since the file was opened (acquisitions ended)."""
        self._announcing = ""

    # -- the file (bluesky verbs: prepare opens it, complete waits for every frame and closes it) ----------

    def prepare(self, file_stem: str, timeout: float = 10.0) -> StatusBase:
        """Set the plugin up to stream into ``<data_dir>/YYYY/MM/DD/<file_stem>.h5`` (``kickoff`` opens it).

        Raises at once if the plugin is already capturing.
        """
        hdf = self.det.hdf1
        if hdf.capture.get(as_string=True) == "Capture":
            raise CaptureError(f"{hdf.name} is already capturing to {hdf.full_file_name.get()}; stop it first")
        self.directory = time.strftime(path_template(self.data_dir))
        self.expected = 0
        self.path = None
        self._stem = file_stem
        self.segments = []
        self._resources = {}
        return puts_in_order(self, [
            (hdf.enable, "Enable"), (hdf.create_directory, CREATE_DIRECTORY_DEPTH),
            (hdf.file_path, self.directory), (hdf.file_name, file_stem), (hdf.file_template, FILE_TEMPLATE),
            (hdf.file_write_mode, "Stream"), (hdf.num_capture, 0), (hdf.auto_increment, "No"),
            (hdf.swmr_mode, "On"), (hdf.num_frames_flush, self.flush_frames), (hdf.lazy_open, "No"),
            (hdf.store_attr, "Yes"), (hdf.nd_array_port, self.det.cam.port_name.get()), (hdf.write_status, 0),
        ], timeout)

    def kickoff(self, timeout: float = 10.0) -> StatusBase:
        """Open the prepared file and start capturing; the Status fails with the IOC's reason if it cannot write.

        The file is the one FullFileName_RBV names once capturing, read whole
        (``signals.WholeStringSignalRO``) and checked to be of the prepared name in the
        prepared directory, so that a run never announces a file that is not its own.
        """
        hdf = self.det.hdf1
        hdf.capture.put(1, wait=False)
        started = condition_status(
            self, [hdf.capture, hdf.write_status],
            lambda: hdf.capture.get(as_string=True) == "Capture" and hdf.write_status.get(as_string=True) == "Ok",
            lambda: None if hdf.write_status.get(as_string=True) == "Ok"
            else f"the camera IOC cannot write in {self.directory}: {hdf.write_message.get()}",
            timeout,
        )
        return then(started, self._opened, self)

    def _opened(self) -> StatusBase:
        """Note the file the IOC opened; refuse one that is not of the prepared name and directory."""
        hdf = self.det.hdf1
        reported = hdf.full_file_name.get(as_string=True, use_monitor=False)  # read whole: detector.py
        path = Path(reported)
        if path.parent != Path(self.directory) or not path.name.startswith(self._stem):
            raise CaptureError(f"{hdf.full_file_name.pvname} reports {reported!r} while capturing, not a file "
                               f"{self._stem}* in {self.directory}: the IOC is not writing the prepared file")
        self.path = path
        return done_status(self)

    def complete(self, timeout: float = 30.0) -> StatusBase:
        """Finished once every frame acquired is in the file and the IOC has closed it.

        Fails if a frame was dropped or a write failed, or when no frame has reached the
        file for ``delivery_timeout_s`` (however long the whole wait takes while frames
        keep arriving), naming how many arrived.
        """
        hdf = self.det.hdf1
        if self.path is None:
            return done_status(self)
        expected = self.expected

        def stalled(seconds: float) -> str:
            return self.delivery_problem() or (
                f"no frame reached {self.path} for {seconds:g} s ({self.written()} of {expected} in it): "
                f"the camera IOC at {self.det.prefix} stopped delivering"
            )

        delivered = progress_status(self, hdf.num_captured, lambda: self.written() >= expected,
                                    self.delivery_problem, self.delivery_timeout_s, stalled)
        return then(delivered, lambda: self._close(timeout), self)

    def _close(self, timeout: float) -> StatusBase:
        """Stop capturing (the IOC closes the file with every frame in it); then check delivery."""
        if self.segments and self.segments[-1].stop is None:
            self.segments[-1].stop = self.expected
        hdf = self.det.hdf1
        if hdf.capture.get(as_string=True, use_monitor=False) != "Capture":
            status = done_status(self)
        else:
            status = put_completed(hdf.capture, 0, timeout)

        def checked() -> StatusBase:
            problem = self.delivery_problem()
            if problem:
                raise CaptureError(problem)
            return done_status(self)

        return then(status, checked, self)

    def unstage(self) -> list:
        """Stop capturing if a run ended without completing (abort, failure): the file is closed, frames kept."""
        hdf = self.det.hdf1
        if self.path is not None and hdf.capture.get(as_string=True, use_monitor=False) == "Capture":
            hdf.capture.put(0, wait=True)
        return [self]

    def stage(self) -> list:
        return [self]

    def acquired(self, frames: int) -> None:
        """An acquisition ended having exposed ``frames`` frames (all on their way to the file)."""
        self.expected += frames

    def written(self) -> int:
        """Frames in the camera file (written and flushed: readable with SWMR)."""
        return int(self.det.hdf1.num_captured.get())

    def delivery_problem(self) -> str | None:
        """Why a frame the camera produced is missing from the file (dropped or failed write); None if none is."""
        hdf = self.det.hdf1
        if hdf.write_status.get(as_string=True) != "Ok":
            return f"the camera file failed: {hdf.write_message.get()}"
        dropped = int(hdf.dropped_arrays.get())
        if dropped:
            return f"{dropped} frames did not reach {self.path}; see {hdf.name}.DroppedArrays"
        return None

    # -- streams ----------------------------------------------------------------------

    def select(self, stream: str) -> None:
        """Frames produced from now on belong to ``stream`` (call between acquisitions)."""
        boundary = self.expected
        if self.segments and self.segments[-1].stop is None:
            self.segments[-1].stop = boundary
        self.segments.append(Segment(stream, boundary))

    @property
    def stream(self) -> str | None:
        return self.segments[-1].stream if self.segments else None

    def frame_range(self, stream: str) -> tuple[int, int]:
        """File index range of the last segment of ``stream`` (its stop: frames produced so far)."""
        for segment in reversed(self.segments):
            if segment.stream == stream:
                return segment.start, segment.stop if segment.stop is not None else self.expected
        raise KeyError(f"no frames of stream {stream!r} in this run")

    # -- bluesky collectable ------------------------------------------------------------

    def describe_collect(self) -> dict[str, dict]:
        cam = self.det.cam
        rows, cols = int(cam.array_size.array_size_y.get()), int(cam.array_size.array_size_x.get())
        source = f"{self.det.hdf1.prefix}FullFileName_RBV"
        keys = {
            "image": {"source": source, "shape": [rows, cols], "dtype": "array", "dtype_numpy": "<u2",
                      "external": "STREAM:", "units": "counts"},
        }
        for key, (_, units) in ATTRIBUTE_KEYS.items():
            keys[key] = {"source": source, "shape": [], "dtype": "number", "dtype_numpy": "<f8",
                         "external": "STREAM:", "units": units}
        return keys

    def _ready(self, stream: str, index: int | None = None) -> tuple[Segment, int] | None:
        """``stream``'s first segment with frames in the file not yet announced, and its stop."""
        if self.path is None:
            return None
        written = self.written() if index is None else min(index, self.written())
        for segment in self.segments:
            if segment.stream != stream:
                continue
            stop = written if segment.stop is None else min(segment.stop, written)
            if stop > segment.announced:
                return segment, stop
        return None

    def ready_streams(self) -> list[str]:
        """Streams with frames in the file not yet announced, in order of their first frames."""
        streams = list(dict.fromkeys(segment.stream for segment in self.segments))
        return [stream for stream in streams if self._ready(stream) is not None]

    def announcing(self, stream: str) -> None:
        """The stream the next collects announce (bluesky names the stream; the assets must match)."""
        self._announcing = stream

    def collect_asset_docs(self, index: int | None = None) -> Iterator[tuple[str, dict]]:
        """Stream assets for frames of the announced stream that reached the file since the last call.

        One contiguous range per call (bluesky wants one width per collect); call again
        while the stream is in :meth:`ready_streams`.
        """
        found = self._ready(self._announcing, index)
        if found is None:
            return
        segment, stop = found
        stream = segment.stream
        indices = StreamRange(start=segment.announced, stop=stop)
        for key, dataset in datasets():
            bundle = self._resources.get((stream, key))
            if bundle is None:
                bundle = ComposeStreamResource()(
                    mimetype="application/x-hdf5", uri=f"file://localhost{self.path}", data_key=key,
                    parameters={"dataset": dataset, "swmr": True}, validate=False,
                )
                self._resources[(stream, key)] = bundle
                yield "stream_resource", bundle.stream_resource_doc
            yield "stream_datum", bundle.compose_stream_datum(indices, validate=False)
        segment.announced = stop

