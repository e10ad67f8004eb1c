"""A tomography run without IOCs: frames into a real camera file, and the documents a plan would emit.

A test helper, not part of the package (tests import it from this folder, benchmarks put
the folder on sys.path). For callbacks' tests and benchmarks (the NXtomo writer, the
online reconstruction):
the camera file is written by the simulator's own HDF5 writer (the areaDetector
layout, SWMR, the instrument's NDAttributes) and the documents follow
docs/documents.md, made with event-model in the order the RunEngine emits them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from event_model import compose_run, pack_event_page

from nanoscope_daq.documents import ATTRIBUTE_KEYS, FRAME_STREAMS, TOMOGRAM_KEYS, TOMOGRAMS_STREAM, datasets
from nanoscope_daq.pipeline.frame_ranges import FrameRange
from nanoscope_daq.sim.hdf5_writer import FileRequest, Frame, Hdf5FrameWriter
from nanoscope_daq.sim.ioc.camera.frames import ATTRIBUTES


def frame_data_keys(shape: tuple[int, int]) -> dict[str, dict]:
    keys = {"image": {"source": "sim:CAM", "dtype": "array", "dtype_numpy": "<u2", "shape": list(shape),
                      "external": "STREAM:", "units": "counts"}}
    for key, (_, units) in ATTRIBUTE_KEYS.items():
        keys[key] = {"source": "sim:CAM", "dtype": "number", "shape": [], "external": "STREAM:", "units": units}
    return keys


def tomogram_data_keys() -> dict[str, dict]:
    kinds = {str: "string", int: "integer", float: "number"}
    return {key: {"source": "plan", "dtype": kinds[type(example)], "shape": []}
            for key, example in TOMOGRAM_KEYS.items()}


class DocumentScan:
    """Writes frames into ``<directory>/<name>.h5`` and passes a tomography run's documents to ``callback``."""

    def __init__(self, directory: Path, callback: Callable[[str, dict], Any], metadata: Mapping[str, Any],
                 frame_shape: tuple[int, int], *, name: str = "scan", chunk: int = 4,
                 tomogram_prefix: str = "") -> None:
        self.callback = callback
        self.chunk = chunk
        self.tomogram_prefix = tomogram_prefix
        self.bundle = compose_run(metadata={**metadata, "data_dir": str(directory)})
        self.emit("start", self.bundle.start_doc)
        self.path = directory / f"{name}.h5"
        self.camera = Hdf5FrameWriter(16)
        self.camera.open(FileRequest(self.path, swmr=True, frames_per_flush=1, attributes=ATTRIBUTES)).result(10)
        self.streams = {}
        for stream in FRAME_STREAMS:
            self.streams[stream] = self.bundle.compose_descriptor(name=stream, data_keys=frame_data_keys(frame_shape))
            self.emit("descriptor", self.streams[stream].descriptor_doc)
        keys = {tomogram_prefix + key: value for key, value in tomogram_data_keys().items()}
        self.streams[TOMOGRAMS_STREAM] = self.bundle.compose_descriptor(name=TOMOGRAMS_STREAM, data_keys=keys)
        self.emit("descriptor", self.streams[TOMOGRAMS_STREAM].descriptor_doc)
        self.resources: dict[tuple[str, str], Any] = {}
        self.seq = {stream: 1 for stream in self.streams}
        self.frames = 0
        self.times: list[float] = []

    def emit(self, name: str, doc: dict) -> None:
        self.callback(name, doc)

    def write(self, pixels: np.ndarray, timestamps: Sequence[float],
              attributes: Sequence[Mapping[str, float]]) -> FrameRange:
        """Write frames (n, rows, cols) with their exposure times and NDAttributes; announces nothing."""
        first = self.frames
        futures = [self.camera.submit(Frame(first + i + 1, float(t), np.asarray(p), {**dict.fromkeys(ATTRIBUTES, 0.0),
                                                                                      **a}))
                   for i, (p, t, a) in enumerate(zip(pixels, timestamps, attributes))]
        written = [future.result(30) for future in futures]
        if written != list(range(first, first + len(futures))):
            raise RuntimeError(f"the camera file writer wrote frames {written}, not {first}..")
        self.frames += len(futures)
        self.times.extend(float(t) for t in timestamps)
        return FrameRange(first, self.frames)

    def take(self, stream: str, pixels: np.ndarray, timestamps: Sequence[float],
             attributes: Sequence[Mapping[str, float]]) -> FrameRange:
        """Write frames and announce them in ``stream`` in chunks of ``chunk``."""
        frames = self.write(pixels, timestamps, attributes)
        for lo in range(frames.start, frames.stop, self.chunk):
            self.announce(stream, lo, min(lo + self.chunk, frames.stop))
        return frames

    def announce(self, stream: str, start: int, stop: int) -> None:
        """The stream_resource (first time) and stream_datum documents of frames ``start``..``stop``."""
        for key, dataset in datasets():
            if (stream, key) not in self.resources:  # one per stream, data key and camera file
                self.resources[stream, key] = self.bundle.compose_stream_resource(
                    mimetype="application/x-hdf5", uri=f"file://localhost{self.path}", data_key=key,
                    parameters={"dataset": dataset, "swmr": True})
                self.emit("stream_resource", self.resources[stream, key].stream_resource_doc)
            seq = self.seq[stream]
            datum = self.resources[stream, key].compose_stream_datum(
                indices={"start": start, "stop": stop}, seq_nums={"start": seq, "stop": seq + stop - start},
                descriptor=self.streams[stream].descriptor_doc)
            self.emit("stream_datum", datum)
        self.seq[stream] += stop - start

    def tomogram(self, index: int, *, darks: FrameRange | None, projections: FrameRange,
                 flats_before: FrameRange | None, flats_after: FrameRange | None, grid: tuple[float, float, int],
                 as_page: bool = False, **override: Any) -> None:
        """The ``tomograms`` event of tomogram ``index`` (``grid``: start, step, count)."""
        def pair(name: str, frames: FrameRange | None) -> dict[str, int]:
            return {f"{name}_start": frames.start if frames else -1, f"{name}_stop": frames.stop if frames else -1}

        data = {"tomogram": index, "time_point": index, "file": str(self.path), **pair("projections", projections),
                **pair("darks", darks), **pair("flats_before", flats_before), **pair("flats_after", flats_after),
                "grid_start_deg": grid[0], "grid_step_deg": grid[1], "grid_count": grid[2],
                "start_time": self._time(projections.start), "end_time": self._time(projections.stop - 1),
                "force_n": math.nan, **override}
        data = {self.tomogram_prefix + key: value for key, value in data.items()}
        event = self.streams[TOMOGRAMS_STREAM].compose_event(data=data, timestamps=dict.fromkeys(data, self._time(-1)))
        if as_page:
            self.emit("event_page", pack_event_page(event))
        else:
            self.emit("event", event)

    def _time(self, index: int) -> float:
        """Exposure time of a written frame (NaN for one never written: a broken run for a test)."""
        return self.times[index] if -len(self.times) <= index < len(self.times) else math.nan

    def stop(self, exit_status: str = "success", reason: str = "") -> None:
        """Close the camera file, then emit the stop document."""
        summary = self.camera.close().result(30)
        self.camera.stop()
        if summary is not None and summary.error is not None:
            raise RuntimeError(f"the camera file writer failed: {summary.error}")
        self.emit("stop", self.bundle.compose_stop(exit_status=exit_status, reason=reason))
