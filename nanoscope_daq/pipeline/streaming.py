"""The online reconstruction callback: subscribe it to the RunEngine and each scan is reconstructed as it runs.

``StreamingReconstruction`` reads the documents of docs/documents.md in the RunEngine's
thread (cheap: it only notes what was announced) and hands the work to one worker
thread, so that a reconstruction never holds up acquisition. The worker takes every
projection chunk waiting in its queue at once: when it falls behind, chunks merge and
the fixed cost of a transform is paid once for all of them (backpressure instead of a
growing backlog). Results are the documents of an analysis run linked to the raw run
(analysis_run.py), passed to ``publish`` from the worker thread; and volume files
beside the camera file. A run without ``scan``/``geometry`` in its start document (not
a tomography scan) is ignored.

The reconstruction's modules (torch) load in the worker thread when the first run starts:
neither the RunEngine nor a scan refused before its run waits for them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from event_model import DocumentRouter

from ..config import Config
from ..documents import TOMOGRAMS_STREAM, DocumentContractError
from .analysis_run import AnalysisRun, Publish
from .announcements import Announcements, CameraFile
from .frame_ranges import FrameRange
from .tomogram import Tomogram

if TYPE_CHECKING:
    from .online_recon import OnlineReconstruction

logger = logging.getLogger(__name__)

MAX_FRAMES_PER_BATCH = 128
"""Most projections the worker reconstructs in one transform when chunks have piled up."""


@dataclass(frozen=True)
class _Frames:
    stream: str
    camera: CameraFile
    frames: FrameRange
    arrived: float


@dataclass(frozen=True)
class _Item:
    kind: str
    payload: Any = None
    arrived: float = 0.0


def _no_publish(name: str, doc: dict) -> None:
    """Default ``publish``: the analysis run is only written to files."""


class StreamingReconstruction(DocumentRouter):
    """Reconstructs each tomogram of a running scan, chunk by chunk; ``wait()`` until it has caught up.

    ``publish(name, doc)`` receives the analysis run's documents (from the worker
    thread); ``written`` lists the volume files; ``errors`` what went wrong (a problem
    fails the analysis run, with the reason in its stop document, never the scan).
    """

    def __init__(self, *, config: Config, publish: Publish = _no_publish,
                 on_volume: Callable[[Path], None] | None = None) -> None:
        super().__init__()
        self.config = config
        if self.config.recon.online_device == "cuda":
            import torch  # on the CPU it loads in the worker, when a run starts

            if not torch.cuda.is_available():
                raise ValueError("recon.online_device is 'cuda' but torch sees no CUDA device; set it to 'cpu'")
        self.publish = publish
        self.on_volume = on_volume
        self.written: list[Path] = []
        self.errors: list[str] = []
        self.busy_s = 0.0
        """Seconds the worker spent reconstructing (for the benchmarks)."""
        self._announcements: Announcements | None = None
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._frames_waiting = 0
        self._worker = threading.Thread(target=self._work, name="online-reconstruction", daemon=True)
        self._worker.start()
        self._run: OnlineReconstruction | None = None
        self._analysis: AnalysisRun | None = None
        self._failed = ""

    # -- documents (RunEngine thread) -------------------------------------------------------------------------
    def __call__(self, name: str, doc: dict, validate: bool = False):
        """Route a document; one that breaks the contract fails the analysis run, never the scan."""
        try:
            return super().__call__(name, doc, validate)
        except DocumentContractError as exc:
            logger.error("online reconstruction: %s document: %s", name, exc)
            self._put(_Item("error", str(exc)))
            return doc

    def _put(self, item: _Item) -> None:
        with self._idle:
            self._pending += 1
            self._frames_waiting += self._projection_frames([item])
        self._queue.put(item)

    @staticmethod
    def _projection_frames(items: list[_Item]) -> int:
        return sum(len(i.payload.frames) for i in items if i.kind == "frames" and i.payload.stream == "projections")

    def frames_waiting(self) -> int:
        """Projection frames announced and not reconstructed yet (the backlog)."""
        with self._idle:
            return self._frames_waiting

    def start(self, doc):
        self._announcements = Announcements() if "scan" in doc and "geometry" in doc else None
        if self._announcements is not None:
            self._put(_Item("start", dict(doc)))

    def descriptor(self, doc):
        if self._announcements is not None:
            self._announcements.descriptor(doc)

    def stream_resource(self, doc):
        if self._announcements is not None:
            self._announcements.stream_resource(doc)

    def stream_datum(self, doc):
        a = self._announcements
        if a is None:
            return
        announced = a.stream_datum(doc)
        if announced is not None:
            frames = _Frames(*announced, arrived=time.monotonic())
            self._put(_Item("frames", frames, frames.arrived))

    def event(self, doc):
        a = self._announcements
        if a is not None and a.stream_name(doc["descriptor"]) == TOMOGRAMS_STREAM:
            tomogram = Tomogram.from_event(doc["data"])
            self._put(_Item("tomogram", (tomogram, a.camera(tomogram.camera_file)), time.monotonic()))

    def stop(self, doc):
        if self._announcements is not None:
            self._put(_Item("stop", dict(doc)))
        self._announcements = None

    # -- waiting ----------------------------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until every document received so far is processed; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Finish the queued work and stop the worker thread."""
        self._queue.put(_Item("exit"))
        self._worker.join()

    # -- work (worker thread) -----------------------------------------------------------------------------------------
    def _done(self, batch: list[_Item]) -> None:
        with self._idle:
            self._pending -= len(batch)
            self._frames_waiting -= self._projection_frames(batch)
            self._idle.notify_all()

    def _work(self) -> None:
        carried: _Item | None = None
        while True:
            item = carried or self._queue.get()
            carried = None
            if item.kind == "exit":
                return
            batch = [item]
            if item.kind == "frames" and item.payload.stream == "projections":
                carried = self._gather(batch)
            started = time.perf_counter()
            self._handle(batch)
            self.busy_s += time.perf_counter() - started
            self._done(batch)

    def _gather(self, batch: list[_Item]) -> _Item | None:
        """Add the projection chunks queued right behind ``batch[0]`` (contiguous, same file) to it."""
        first = batch[0].payload
        stop = first.frames.stop
        while stop - first.frames.start < MAX_FRAMES_PER_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return None
            p = nxt.payload
            if nxt.kind != "frames" or p.stream != "projections" or p.camera is not first.camera or \
                    p.frames.start != stop:
                return nxt
            batch.append(nxt)
            stop = p.frames.stop
        return None

    def _handle(self, batch: list[_Item]) -> None:
        item = batch[0]
        try:
            if item.kind == "start":
                self._begin(item.payload)
            elif item.kind == "stop":
                self._end(item.payload)
            elif item.kind == "error":
                raise DocumentContractError(item.payload)
            elif self._run is not None and not self._failed:
                self._process(batch)
        except Exception as exc:  # noqa: BLE001 - the worker thread must outlive any one run's failure
            logger.exception("online reconstruction failed")
            self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, reason: str) -> None:
        self._failed = reason
        self.errors.append(reason)

    def _begin(self, start: dict) -> None:
        from .online_geometry import online_setup
        from .online_recon import ANALYSIS, OnlineReconstruction

        self._failed = ""
        try:
            setup = online_setup(start, self.config.recon)
        except (DocumentContractError, ValueError) as exc:
            self.errors.append(str(exc))
            logger.error("online reconstruction: run %s not reconstructed: %s", start["uid"], exc)
            self._run = None
            return
        g = setup.geometry
        self._analysis = AnalysisRun(self.publish, start, ANALYSIS, {
            "recon": {"algorithm": setup.algorithm, "binning": setup.binning, "filter": self.config.recon.filter,
                      "device": self.config.recon.online_device, "cor_column": float(g.cor_value()),
                      "volume_shape": list(g.default_volume().shape),
                      "voxel_size_um": g.default_volume().voxel_size_um},
        })
        self._run = OnlineReconstruction(setup, self.config, self._analysis, start, self._wrote)

    def _process(self, batch: list[_Item]) -> None:
        item = batch[0]
        if item.kind == "tomogram":
            self._run.tomogram(*item.payload)
            return
        first = item.payload
        if first.stream != "projections":
            self._run.calibration(first.stream, first.camera, first.frames, first.arrived)
            return
        frames = FrameRange(first.frames.start, batch[-1].payload.frames.stop)
        self._run.projections(first.camera, frames, batch[-1].arrived)

    def _wrote(self, path: Path) -> None:
        self.written.append(path)
        if self.on_volume is not None:
            self.on_volume(path)

    def _end(self, stop: dict) -> None:
        run, analysis = self._run, self._analysis
        self._run = self._analysis = None
        if run is None or analysis is None:
            return
        if run.waiting and not self._failed:
            self._fail("projections arrived but no flat fields (open-beam frames) did: the online reconstruction "
                       "needs them; scan with flats (plan parameter flats > 0)")
        if not self._failed:
            try:
                unfinished = run.finish()
            except Exception as exc:  # noqa: BLE001 - reported in the analysis run's stop document
                logger.exception("online reconstruction failed")
                self._fail(f"{type(exc).__name__}: {exc}")
            else:
                if unfinished:
                    logger.warning("online reconstruction: tomograms %s were published with the frames received "
                                   "before the run stopped", unfinished)
        run.close()
        if self._failed:
            analysis.stop("fail", self._failed)
        else:
            analysis.stop("success", f"raw run ended: {stop.get('exit_status', 'unknown')}")
