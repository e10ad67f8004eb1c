"""The camera's preview (``<prefix>CAM:image1:``) fetched off the GUI thread, decimated to what is drawn.

Only ``ArrayCounter_RBV`` is monitored; the pixels (``ArrayData``) are read by a plain CA get
when a new frame is there **and** the view has drawn the previous one, at most
``[gui] view_rate_hz`` times a second. Frames in between are never read (the data of
record goes to the HDF5 file, never through Channel Access), so a busy console slows
nothing down, and never builds a backlog.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from PySide6.QtCore import QObject, Signal

PREVIEW_PLUGIN = "CAM:image1:"
"""The areaDetector NDStdArrays plugin of the camera, under the instrument's prefix (DESIGN.md)."""


class PreviewSource(QObject):
    """Emits :attr:`frame` (an integer array, rows x cols, as Channel Access delivered it) for each frame it reads.

    Parameters
    ----------
    prefix : str
        The instrument's PV prefix.
    rate_hz : float
        Most frames read per second.
    """

    frame = Signal(object)

    def __init__(self, prefix: str, rate_hz: float) -> None:
        super().__init__()
        self.base = prefix + PREVIEW_PLUGIN
        self.interval_s = 1.0 / rate_hz
        self.frames_read = 0
        self.frames_produced = 0
        self._fresh = threading.Event()
        self._drawn = threading.Event()
        self._drawn.set()
        self._stop = threading.Event()
        self._first_counter: int | None = None
        self._thread = threading.Thread(target=self._run, name="camera-preview", daemon=True)

    def start(self) -> None:
        """Start reading frames (in a thread of its own)."""
        self._thread.start()

    def drawn(self) -> None:
        """Called by the view once it has drawn the last frame: the next one may be read."""
        self._drawn.set()

    def _on_counter(self, value: float | None = None, **_: object) -> None:
        if value is None:
            return
        if self._first_counter is None:
            self._first_counter = int(value)
        self.frames_produced = int(value) - self._first_counter
        self._fresh.set()

    def _run(self) -> None:
        import epics

        epics.ca.use_initial_context()
        counter = epics.PV(self.base + "ArrayCounter_RBV", callback=self._on_counter, auto_monitor=True)
        cols = epics.PV(self.base + "ArraySize0_RBV", auto_monitor=True)
        rows = epics.PV(self.base + "ArraySize1_RBV", auto_monitor=True)
        data = epics.PV(self.base + "ArrayData", auto_monitor=False)
        last = 0.0
        try:
            while not self._stop.is_set():
                if not self._fresh.wait(0.2) or not self._drawn.wait(0.2):
                    continue
                time.sleep(max(0.0, last + self.interval_s - time.monotonic()))
                self._fresh.clear()
                shape = (rows.get(), cols.get())
                if None in shape or 0 in shape:
                    continue
                pixels = data.get(count=shape[0] * shape[1], as_numpy=True, timeout=2.0)
                if pixels is None or np.size(pixels) != shape[0] * shape[1]:
                    continue
                last = time.monotonic()
                self._drawn.clear()
                self.frames_read += 1
                self.frame.emit(np.reshape(pixels, shape))  # no copy: the view converts what it draws
        finally:
            for pv in (counter, cols, rows, data):
                pv.disconnect()

    def stop(self) -> None:
        """Stop reading and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
