"""What the console shows of the scan under way, made from its documents (in the documents feed's thread).

* progress: projection frames announced (``stream_datum`` of the ``projections`` stream)
  of the total the start document plans, and the time left at the rate so far;
* the live sinogram of one detector row: that row of every announced projection, read
  from the camera file (SWMR, docs/documents.md) here, never in the GUI thread;
* the online reconstruction's orthogonal slices (``live_slices`` and ``volumes`` events
  of the analysis run) and the segmentation's labels through the same planes (the
  ``labels`` event names the labels file);
* for each segmented tomogram (a time point of a series), its morphometry: BV/TV,
  porosity and lacunar density (analysis/morphometry.py, in a thread of its own).

Everything is handed to the GUI as Qt signals carrying numpy arrays.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import h5py
import numpy as np
from PySide6.QtCore import QObject, Signal

from ..documents import IMAGE_DATA_KEY, IMAGE_DATASET, STREAM_OF_KEY, ImageKey
from ..volume_files import read_labels

PROJECTIONS_STREAM = STREAM_OF_KEY[ImageKey.PROJECTION]
PLANES = ("xy", "xz", "yz")


def time_point_measures(path: str) -> dict[str, float]:
    """BV/TV, porosity and lacunar density (per mm^3) of a labels file."""
    from ..analysis.morphometry import morphometry  # scipy and the thickness maps load with the first labels

    labels = read_labels(path)
    measured = morphometry(labels.data, labels.voxel_size_um)
    return {"bv_tv": measured.bv_tv, "porosity": measured.porosity,
            "lacunae_per_mm3": measured.lacunae.density_per_mm3}


def label_slices(path: str, dataset: str = "/labels") -> dict[str, np.ndarray]:
    """The labels through the volume's three mid-planes (z-y-x), read from the file plane by plane."""
    with h5py.File(path, "r") as h5:
        labels = h5[dataset]
        nz, ny, nx = labels.shape
        return {"xy": labels[nz // 2], "xz": labels[:, ny // 2, :], "yz": labels[:, :, nx // 2]}


class LiveScan(QObject):
    """Follows the documents of the scan under way and its analysis run; emits what the views draw."""

    started = Signal(dict)
    """A scan's start document."""
    progress = Signal(int, int, object)
    """Projection frames announced, frames planned, seconds left (None when unknown)."""
    sinogram = Signal(object, int)
    """The live sinogram (projections x columns, float32) and its detector row."""
    slices = Signal(dict)
    """The online reconstruction's mid-slices, by plane (``xy``, ``xz``, ``yz``)."""
    labels = Signal(dict)
    """The segmentation's labels through the same planes."""
    measures = Signal(int, dict)
    """A segmented tomogram's index (its time point in a series) and its morphometry (:func:`time_point_measures`)."""
    finished = Signal(str)
    """A scan's exit status."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.row: int | None = None
        self.frames = 0
        self.total = 0
        self._run_uid = ""
        self._first_frame_time: float | None = None
        self._descriptors: dict[str, str] = {}
        self._resources: dict[str, tuple[str, str]] = {}
        self._announced: list[tuple[str, str, int, int]] = []
        self._rows: list[np.ndarray] = []
        self._analysis_runs: set[str] = set()

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """One document (the feed's thread)."""
        handler = getattr(self, f"_{name}", None)
        if handler is not None:
            with self._lock:
                handler(doc)

    def choose_row(self, row: int) -> None:
        """Show detector row ``row`` from now on (the sinogram is read again from the files)."""
        threading.Thread(target=self._reread, args=(row,), name="sinogram-row", daemon=True).start()

    def _reread(self, row: int) -> None:
        with self._lock:
            self.row = row
            self._rows = [self._read_rows(*announced) for announced in self._announced]
            self._emit_sinogram()

    # -- documents -----------------------------------------------------------------------------------------------
    def _start(self, doc: dict) -> None:
        if "raw_run_uid" in doc:
            self._analysis_runs.add(doc["uid"])
            return
        if "scan" not in doc:
            return
        scan = doc["scan"]
        self._run_uid = doc["uid"]
        self.total = int(scan.get("projections", 0)) * max(int(scan.get("tomograms", 1)),
                                                            len(scan.get("loads_n", [])) or 1)
        self.frames = 0
        self._first_frame_time = None
        self._descriptors.clear()
        self._resources.clear()
        self._announced.clear()
        self._rows.clear()
        rows = doc.get("geometry", {}).get("rows")
        if rows and (self.row is None or self.row >= rows):
            self.row = int(rows) // 2
        self.started.emit(doc)
        self.progress.emit(0, self.total, None)

    def _descriptor(self, doc: dict) -> None:
        self._descriptors[doc["uid"]] = doc.get("name", "")

    def _stream_resource(self, doc: dict) -> None:
        if doc.get("data_key") == IMAGE_DATA_KEY:
            path = doc["uri"].removeprefix("file://localhost")
            self._resources[doc["uid"]] = (path, doc.get("parameters", {}).get("dataset", IMAGE_DATASET))

    def _stream_datum(self, doc: dict) -> None:
        resource = self._resources.get(doc["stream_resource"])
        if resource is None or self._descriptors.get(doc["descriptor"]) != PROJECTIONS_STREAM:
            return
        start, stop = int(doc["indices"]["start"]), int(doc["indices"]["stop"])
        now = time.monotonic()
        if self._first_frame_time is None:
            self._first_frame_time = now
        self.frames += stop - start
        elapsed = now - self._first_frame_time
        rate = self.frames / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.frames) / rate if rate > 0 and self.total else None
        self.progress.emit(self.frames, self.total, eta)
        self._announced.append((*resource, start, stop))
        if self.row is not None:
            self._rows.append(self._read_rows(*resource, start, stop))
            self._emit_sinogram()

    def _event(self, doc: dict) -> None:
        stream = self._descriptors.get(doc["descriptor"])
        data = doc["data"]
        if stream in ("live_slices", "volumes") and all(plane in data for plane in PLANES):
            self.slices.emit({plane: np.asarray(data[plane], dtype=np.float32) for plane in PLANES})
        elif stream == "labels" and "labels_file" in data:
            self.labels.emit(label_slices(data["labels_file"]))
            if data.get("selection", "all") == "all":
                threading.Thread(target=self._measure, args=(int(data.get("tomogram", 0)), data["labels_file"]),
                                 name="morphometry", daemon=True).start()

    def _measure(self, tomogram: int, path: str) -> None:
        try:
            self.measures.emit(tomogram, time_point_measures(path))
        except ValueError as exc:  # no bone segmented (a blank field): nothing to plot
            self.measures.emit(tomogram, {"error": str(exc)})

    def _stop(self, doc: dict) -> None:
        if doc.get("run_start") == self._run_uid:
            self.finished.emit(doc.get("exit_status", ""))

    # -- the sinogram --------------------------------------------------------------------------------------------
    def _read_rows(self, path: str, dataset: str, start: int, stop: int) -> np.ndarray:
        """Row ``self.row`` of frames [start, stop) of the camera file (opened SWMR: the camera still writes)."""
        with h5py.File(path, "r", swmr=True) as h5:
            frames = h5[dataset]
            frames.refresh()
            return np.asarray(frames[start:stop, self.row, :], dtype=np.float32)

    def _emit_sinogram(self) -> None:
        if self._rows and self.row is not None:
            self.sinogram.emit(np.concatenate(self._rows), self.row)
