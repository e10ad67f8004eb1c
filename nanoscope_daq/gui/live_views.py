"""The live sinogram of a chosen detector row, the online reconstruction's slices with the labels overlaid, and the
morphometry of each segmented time point."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from ..analysis.labels import Code
from .live_scan import PLANES

CLASS_COLOURS: dict[int, tuple[int, int, int, int]] = {
    Code.SOFT_TISSUE: (230, 60, 60, 110), Code.BONE: (60, 200, 90, 110), Code.LCN: (70, 120, 240, 110),
    Code.VESSEL: (240, 200, 40, 110),
}
"""Overlay colour (RGBA) of each label code (DESIGN.md); background is transparent."""
TREND_CURVES = (("bv_tv", "BV/TV", (60, 200, 90)), ("porosity", "porosity", (70, 120, 240)))
"""The time-point measures plotted (key, legend, colour); lacunar density is in the title."""


def _levels(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, (1, 99))
    return float(low), float(max(high, low + 1e-6))


class SinogramView(QWidget):
    """The sinogram (projections down, columns across) of the row chosen in the spin box.

    Emits :attr:`row_chosen` when the operator picks another row.
    """

    row_chosen = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(title="live sinogram")
        self.plot.invertY(True)
        self.plot.setLabel("bottom", "detector column (px)")
        self.plot.setLabel("left", "projection")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.row = QSpinBox()
        self.row.setRange(0, 65535)
        self.row.setKeyboardTracking(False)
        self.row.valueChanged.connect(self.row_chosen.emit)
        self.projections = 0
        controls = QHBoxLayout()
        controls.addWidget(QLabel("detector row"))
        controls.addWidget(self.row)
        controls.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.plot, 1)

    def show_sinogram(self, sinogram: np.ndarray, row: int) -> None:
        """Draw ``sinogram`` (projections x columns) of detector ``row``."""
        self.projections = sinogram.shape[0]
        self.image.setImage(np.ascontiguousarray(sinogram), autoLevels=False, levels=_levels(sinogram))
        self.plot.setTitle(f"row {row}: {self.projections} projections")
        self.row.blockSignals(True)
        self.row.setValue(row)
        self.row.blockSignals(False)


class SlicesView(QWidget):
    """The xy, xz and yz mid-slices of the running reconstruction, labels overlaid (a check box per class)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        graphics = pg.GraphicsLayoutWidget()
        self.images: dict[str, pg.ImageItem] = {}
        self.overlays: dict[str, pg.ImageItem] = {}
        for column, plane in enumerate(PLANES):
            plot = graphics.addPlot(row=0, col=column, title=plane)
            plot.setAspectLocked(True)
            plot.invertY(True)
            plot.hideAxis("left")
            plot.hideAxis("bottom")
            self.images[plane] = pg.ImageItem(axisOrder="row-major")
            self.overlays[plane] = pg.ImageItem(axisOrder="row-major")
            plot.addItem(self.images[plane])
            plot.addItem(self.overlays[plane])
        self.classes: dict[int, QCheckBox] = {}
        self.status = QLabel("no reconstruction yet")
        controls = QHBoxLayout()
        controls.addWidget(QLabel("labels:"))
        for value in CLASS_COLOURS:
            box = QCheckBox(Code(value).name.lower().replace("_", " "))
            box.setChecked(True)
            box.toggled.connect(self._draw_labels)
            self.classes[value] = box
            controls.addWidget(box)
        controls.addStretch(1)
        controls.addWidget(self.status)
        layout = QVBoxLayout(self)
        layout.addWidget(graphics, 1)
        layout.addLayout(controls)
        self.slices: dict[str, np.ndarray] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.updates = 0

    def show_slices(self, slices: dict[str, np.ndarray]) -> None:
        """Draw the reconstruction's mid-slices (attenuation, 1/mm)."""
        self.slices = slices
        for plane, image in slices.items():
            self.images[plane].setImage(np.ascontiguousarray(image), autoLevels=False, levels=_levels(image))
        self.updates += 1
        self.status.setText(f"reconstruction update {self.updates}")
        self._draw_labels()

    def show_labels(self, labels: dict[str, np.ndarray]) -> None:
        """Overlay the segmentation's labels through the same planes."""
        self.labels = labels
        self._draw_labels()

    def _draw_labels(self) -> None:
        for plane, labels in self.labels.items():
            overlay = np.zeros((*labels.shape, 4), dtype=np.uint8)
            for value, box in self.classes.items():
                if box.isChecked():
                    overlay[labels == value] = CLASS_COLOURS[value]
            self.overlays[plane].setImage(overlay, autoLevels=False, levels=(0, 255))
            if plane in self.slices and self.slices[plane].shape == labels.shape:
                self.overlays[plane].setRect(self.images[plane].boundingRect())


class MorphometryTrend(QWidget):
    """BV/TV and porosity of each segmented time point (tomogram of a series) against the time point."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(title="morphometry per time point")
        self.plot.setLabel("bottom", "time point (tomogram)")
        self.plot.setLabel("left", "fraction")
        self.plot.addLegend(offset=(5, 5))
        self.curves = {key: self.plot.plot([], [], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                                           symbolBrush=colour, name=name) for key, name, colour in TREND_CURVES}
        self.points: dict[int, dict[str, float]] = {}
        layout = QVBoxLayout(self)
        layout.addWidget(self.plot)

    def add_point(self, time_point: int, measures: dict) -> None:
        """Plot one time point's measures (``error``: why it has none)."""
        if "error" in measures:
            self.plot.setTitle(f"time point {time_point}: {measures['error']}")
            return
        self.points[time_point] = measures
        order = sorted(self.points)
        for key, curve in self.curves.items():
            curve.setData(order, [self.points[t][key] for t in order])
        last = self.points[order[-1]]
        self.plot.setTitle(f"time point {order[-1]}: BV/TV {last['bv_tv']:.3f}, porosity {last['porosity']:.4f}, "
                           f"lacunae {last['lacunae_per_mm3']:.0f}/mm³")

    def clear(self) -> None:
        """Forget the plotted points (a new scan begins)."""
        self.points.clear()
        for curve in self.curves.values():
            curve.setData([], [])

