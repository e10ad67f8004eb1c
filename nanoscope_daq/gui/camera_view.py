"""The camera view: the latest frame with a histogram and levels, cursor readout, saturated pixels, line profile.

Follows pyqtgraph's guidance for fast images: an ``ImageItem`` (not ``ImageView``, which
recomputes and resets its histogram on every frame) fed C-contiguous row-major uint16
data, with explicit levels, so each frame costs one lookup through a small LUT; the
histogram and the line profile are redrawn a few times a second, not with every frame. A frame
larger than ``display_max_size`` a side is drawn every n-th pixel, placed on the full
frame's pixel coordinates; the profile, readout and saturation check use the full frame. Levels
are fixed (dragged on the histogram) or set once from the frame on demand ("Auto
levels"), or every frame when "Follow" is ticked.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

DETAIL_INTERVAL_S = 0.2
"""The histogram and the line profile are redrawn at most this often (the image itself with every frame)."""
AUTO_LEVEL_PERCENTILES = (0.5, 99.5)
AUTO_LEVEL_SAMPLE = 256
"""Auto levels look at about this many rows and columns of the frame (a strided view: no copy of the frame)."""
SATURATED_RGBA = (255, 0, 0, 200)


class CameraView(QWidget):
    """Shows frames given to :meth:`show_frame`; emits :attr:`frame_drawn` after each.

    Parameters
    ----------
    saturation_counts : int
        Pixels at or above this value are drawn in red.
    display_max_size : int
        Frames larger than this a side are drawn every n-th pixel.
    """

    frame_drawn = Signal()

    def __init__(self, saturation_counts: int, display_max_size: int = 1024, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(imageAxisOrder="row-major")
        self.saturation_counts = saturation_counts
        self.display_max_size = display_max_size
        self.frame: np.ndarray | None = None
        self.frames_shown = 0
        self._levels_set = False
        self._profiled_row = -1
        self._details_drawn = 0.0

        graphics = pg.GraphicsLayoutWidget()
        self.plot = graphics.addPlot(row=0, col=0)
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        for axis in ("left", "bottom"):  # repainted with every frame; the cursor readout gives the pixel
            self.plot.hideAxis(axis)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.saturated = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.plot.addItem(self.saturated)
        self.histogram = pg.HistogramLUTItem(image=self.image)
        self.image.sigImageChanged.disconnect(self.histogram.imageChanged)  # redrawn in _draw_details instead
        self.histogram.gradient.loadPreset("grey")
        graphics.addItem(self.histogram, row=0, col=1)
        self.profile_row = pg.InfiniteLine(pos=0, angle=0, movable=True, pen=pg.mkPen("c"))
        self.plot.addItem(self.profile_row)
        self.profile = graphics.addPlot(row=1, col=0)
        self.profile.setMaximumHeight(140)
        self.profile.setLabel("bottom", "column (px)")
        self.profile.setLabel("left", "counts")
        self.profile_curve = self.profile.plot(pen="c")
        self.profile_row.sigPositionChanged.connect(self._draw_profile)
        graphics.scene().sigMouseMoved.connect(self._on_mouse)

        self.cursor = QLabel("move the cursor over the image")
        self.auto_button = QPushButton("Auto levels")
        self.auto_button.clicked.connect(self.auto_levels)
        self.follow = QCheckBox("Follow")
        self.follow.setToolTip("auto levels on every frame")
        controls = QHBoxLayout()
        controls.addWidget(self.cursor, 1)
        controls.addWidget(self.auto_button)
        controls.addWidget(self.follow)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(graphics, 1)
        layout.addLayout(controls)

    def show_frame(self, frame: np.ndarray) -> None:
        """Draw ``frame`` (rows x cols, integer counts) with the current levels (set from it when none are yet)."""
        first = self.frame is None or self.frame.shape != frame.shape
        self.frame = frame
        if not self._levels_set or self.follow.isChecked():
            self.auto_levels()
        step = max(1, math.ceil(max(frame.shape) / self.display_max_size))
        shown = np.ascontiguousarray(frame[::step, ::step], dtype=np.uint16)  # the LUT's fast path: uint16
        self.image.setImage(shown, autoLevels=False, levels=self.histogram.getLevels())
        full = QRectF(0, 0, shown.shape[1] * step, shown.shape[0] * step)
        self.image.setRect(full)
        self._draw_saturated(frame, step, full)
        if first:
            self.profile_row.setValue(frame.shape[0] // 2)
            self.profile_row.setBounds((0, frame.shape[0] - 1))
        now = time.monotonic()
        if first or now - self._details_drawn >= DETAIL_INTERVAL_S:
            self._details_drawn = now
            self.histogram.imageChanged()
            self._draw_profile()
        self.frames_shown += 1
        self.frame_drawn.emit()

    def auto_levels(self) -> None:
        """Levels from the current frame's 0.5 and 99.5 percentiles (on a strided sample of it)."""
        if self.frame is None:
            return
        step = max(1, max(self.frame.shape) // AUTO_LEVEL_SAMPLE)
        low, high = np.percentile(self.frame[::step, ::step], AUTO_LEVEL_PERCENTILES)
        self.histogram.setLevels(float(low), float(max(high, low + 1)))
        self._levels_set = high > low  # a flat frame (the preview before the first exposure) sets no levels

    def saturated_pixels(self) -> int:
        """Pixels of the current frame at or above the saturation level."""
        return 0 if self.frame is None else int(np.count_nonzero(self.frame >= self.saturation_counts))

    def _draw_saturated(self, frame: np.ndarray, step: int, rect: QRectF) -> None:
        if frame.max() < self.saturation_counts:
            self.saturated.setVisible(False)
            return
        rows, cols = -(-frame.shape[0] // step), -(-frame.shape[1] // step)
        padded = np.zeros((rows * step, cols * step), dtype=bool)
        padded[: frame.shape[0], : frame.shape[1]] = frame >= self.saturation_counts
        mask = padded.reshape(rows, step, cols, step).any(axis=(1, 3))  # a block with any saturated pixel
        overlay = np.zeros((rows, cols, 4), dtype=np.uint8)
        overlay[mask] = SATURATED_RGBA
        self.saturated.setImage(overlay, autoLevels=False, levels=(0, 255))
        self.saturated.setRect(rect)
        self.saturated.setVisible(True)

    def _draw_profile(self) -> None:
        if self.frame is None:
            return
        row = int(np.clip(round(self.profile_row.value()), 0, self.frame.shape[0] - 1))
        self.profile_curve.setData(self.frame[row])
        if row != self._profiled_row:
            self._profiled_row = row
            self.profile.setTitle(f"line profile, row {row}")

    def _on_mouse(self, position: QPointF) -> None:
        if self.frame is None:
            return
        point = self.plot.vb.mapSceneToView(position)  # full-frame pixel coordinates
        col, row = int(np.floor(point.x())), int(np.floor(point.y()))
        if 0 <= row < self.frame.shape[0] and 0 <= col < self.frame.shape[1]:
            self.cursor.setText(self.readout(row, col))

    def readout(self, row: int, col: int) -> str:
        """The cursor readout at pixel (``row``, ``col``): position and value."""
        value = int(self.frame[row, col])
        flag = " (saturated)" if value >= self.saturation_counts else ""
        return f"x {col}, y {row}: {value} counts{flag}"
