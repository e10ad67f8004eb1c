"""The devices panel: rotation, stages, source, camera, loading cell and physiology, alarms in colour.

Every readback is a Channel Access monitor (:class:`~.pv_monitor.PVMonitor`); the panel
redraws at ``[gui] status_rate_hz``. A readback in alarm is drawn red and listed in the
alarm line at the top; one not connected is drawn grey.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .pv_monitor import PVMonitor

ALARM_STYLE = "background-color: #d32f2f; color: white; font-weight: bold; padding: 1px 4px;"
OK_STYLE = "padding: 1px 4px;"
DISCONNECTED_STYLE = "color: #888; padding: 1px 4px;"
GATE_BRUSH = (80, 200, 120, 70)


@dataclasses.dataclass(frozen=True)
class Readout:
    """One readback: its label, PV suffix (after the prefix), format, and when it is an alarm."""

    label: str
    suffix: str
    unit: str = ""
    digits: int = 2
    alarm: Callable[[Any], bool] | None = None

    def text(self, value: Any) -> str:
        """``value`` as shown: numbers with ``digits`` decimals and the unit, text as it is."""
        if value is None:
            return "–"
        if isinstance(value, str):
            return value or "–"
        if np.ndim(value):
            return f"{len(value)} values"
        return f"{float(value):.{self.digits}f} {self.unit}".strip()


def _equals(text: str) -> Callable[[Any], bool]:
    return lambda value: value == text


def _not_in(*texts: str) -> Callable[[Any], bool]:
    return lambda value: value is not None and value not in texts


def _positive(value: Any) -> bool:
    return value is not None and float(value) > 0


GROUPS: dict[str, tuple[Readout, ...]] = {
    "Rotation and stages": (
        Readout("rotation", "ROT.RBV", "deg"), Readout("speed", "ROT.VELO", "deg/s"),
        Readout("moving", "ROT.MOVN", digits=0), Readout("SX", "SX.RBV", "mm", 3), Readout("SY", "SY.RBV", "mm", 3),
        Readout("SZ", "SZ.RBV", "mm", 3)),
    "Source": (
        Readout("state", "SRC:STATE_RBV", alarm=_equals("Fault")), Readout("high voltage", "SRC:KV_RBV", "kV", 1),
        Readout("power", "SRC:POWER_RBV", "W", 1), Readout("shutter", "SRC:SHUTTER_RBV"),
        Readout("interlock", "SRC:INTLK_RBV", alarm=_equals("Tripped")),
        Readout("warm-up", "SRC:WARMUP_RBV", "%", 0), Readout("message", "SRC:MSG")),
    "Camera": (
        Readout("state", "CAM:cam1:DetectorState_RBV", alarm=_equals("Error")),
        Readout("frame rate", "CAM:cam1:ArrayRate_RBV", "fps", 1),
        Readout("temperature", "CAM:cam1:TemperatureActual", "°C", 1),
        Readout("frames", "CAM:cam1:ArrayCounter_RBV", digits=0),
        Readout("captured", "CAM:HDF1:NumCaptured_RBV", digits=0),
        Readout("dropped", "CAM:HDF1:DroppedArrays_RBV", digits=0, alarm=_positive),
        Readout("lost", "CAM:cam1:FramesLost_RBV", digits=0, alarm=_positive)),
    "Loading cell": (
        Readout("force", "LOAD:FORCE_RBV", "N", 2), Readout("extension", "LOAD:EXT_RBV", "mm", 4),
        Readout("alarm", "LOAD:ALM", alarm=_not_in("No alarm")), Readout("message", "LOAD:MSG")),
    "Physiology": (
        Readout("respiration rate", "PHYS:RATE", "bpm", 0), Readout("heart rate", "PHYS:HR", "bpm", 0),
        Readout("temperature", "PHYS:TEMP", "°C", 1), Readout("gate", "PHYS:GATE"),
        Readout("alarm", "PHYS:ALARM", alarm=_equals("ALARM")), Readout("alarm reason", "PHYS:ALARM_MSG")),
}
"""What the panel shows, by device (PV suffixes from docs/pv-reference.md)."""

SETPOINTS: dict[str, tuple[str, str]] = {
    "source high voltage (kV)": ("SRC:KV", "SRC:MSG"), "source power (W)": ("SRC:POWER", "SRC:MSG"),
    "source spot (µm)": ("SRC:SPOT", "SRC:MSG"), "loading speed (mm/min)": ("LOAD:SPEED", "LOAD:MSG"),
    "respiration rate low limit (bpm)": ("PHYS:RATE_LO", "PHYS:MSG"),
    "respiration rate high limit (bpm)": ("PHYS:RATE_HI", "PHYS:MSG"),
    "heart rate low limit (bpm)": ("PHYS:HR_LO", "PHYS:MSG"),
    "heart rate high limit (bpm)": ("PHYS:HR_HI", "PHYS:MSG"),
    "temperature low limit (°C)": ("PHYS:TEMP_LO", "PHYS:MSG"),
    "temperature high limit (°C)": ("PHYS:TEMP_HI", "PHYS:MSG"),
}
"""Set points the panel writes: (PV suffix, the device's message PV that explains a refusal)."""

TREND_SUFFIXES = ("LOAD:FORCE_RBV", "LOAD:EXT_RBV", "PHYS:GATE")
WAVEFORM_SUFFIXES = ("PHYS:RESP_HIST", "PHYS:RESP_HIST_DT")


def _show(label: QLabel, text: str, style: str) -> None:
    """Set ``label``'s text and style sheet, each only when it changed (a style sheet re-polishes the widget)."""
    if label.text() != text:
        label.setText(text)
    if label.styleSheet() != style:
        label.setStyleSheet(style)


class DevicesPanel(QWidget):
    """Readbacks and alarms of every device of the instrument at ``prefix``; set points written with the
    device's own validation (a refused value shows the device's reason).

    Parameters
    ----------
    prefix : str
        The instrument's PV prefix.
    trend_s : float
        Seconds of force and extension history plotted.
    """

    setpoint_done = Signal(str, bool)
    """The reply to a set point: what was written, or the device's reason for refusing it (True)."""

    def __init__(self, prefix: str, trend_s: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.prefix = prefix
        readouts = [readout for group in GROUPS.values() for readout in group]
        names = [prefix + r.suffix for r in readouts] + [prefix + s for s in WAVEFORM_SUFFIXES]
        names += sorted({prefix + suffix for pair in SETPOINTS.values() for suffix in pair} - set(names))
        self.monitor = PVMonitor(names, trend_s, trends=[prefix + s for s in TREND_SUFFIXES])
        self.labels: dict[str, QLabel] = {}
        self.alarm_line = QLabel("no alarm")
        self.alarm_line.setWordWrap(True)
        grid = QGridLayout()
        for index, (title, group) in enumerate(GROUPS.items()):
            box = QGroupBox(title)
            form = QFormLayout(box)
            form.setVerticalSpacing(2)
            for readout in group:
                label = QLabel("–")
                label.setWordWrap(True)
                self.labels[readout.suffix] = label
                form.addRow(readout.label, label)
            grid.addWidget(box, index // 3, index % 3)
        self.load_plot = pg.PlotWidget(title="loading cell")
        self.load_plot.setLabel("bottom", "time (s)")
        self.load_plot.addLegend(offset=(5, 5))
        self.force_curve = self.load_plot.plot(pen="y", name="force (N)")
        self.extension_curve = self.load_plot.plot(pen="c", name="extension (µm)")
        self.breath_plot = pg.PlotWidget(title="respiration (gate shaded)")
        self.breath_plot.setLabel("bottom", "time (s)")
        self.breath_plot.setLabel("left", "chest (mm)")
        self.gate_curve = self.breath_plot.plot(pen=None, fillLevel=0.0, brush=GATE_BRUSH, stepMode="center")
        self.breath_curve = self.breath_plot.plot(pen=pg.mkPen("w", width=1.5))
        plots = QGridLayout()
        plots.addWidget(self.load_plot, 0, 0)
        plots.addWidget(self.breath_plot, 0, 1)
        self.setpoint = QComboBox()
        self.setpoint.addItems(list(SETPOINTS))
        self.setpoint_value = QLineEdit()
        self.setpoint_value.setPlaceholderText("new value")
        set_button = QPushButton("Set")
        set_button.clicked.connect(self.put_setpoint)
        self.setpoint_reply = QLabel("")
        self.setpoint_reply.setWordWrap(True)
        self.setpoint_done.connect(self._show_reply)
        setpoint_row = QHBoxLayout()
        for widget in (self.setpoint, self.setpoint_value, set_button):
            setpoint_row.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.addWidget(self.alarm_line)
        layout.addLayout(grid)
        layout.addLayout(setpoint_row)
        layout.addWidget(self.setpoint_reply)
        layout.addLayout(plots, 1)

    def value(self, suffix: str) -> Any:
        """The latest value of the PV ``prefix + suffix``."""
        return self.monitor.value(self.prefix + suffix)

    def alarms(self) -> list[str]:
        """Every readback in alarm now, as 'device label: value'."""
        return [f"{title.lower()} {readout.label}: {readout.text(self.value(readout.suffix))}"
                for title, group in GROUPS.items() for readout in group
                if readout.alarm is not None and readout.alarm(self.value(readout.suffix))]

    def refresh(self) -> None:
        """Redraw every readback, the alarm line and the plots from the latest values."""
        for group in GROUPS.values():
            for readout in group:
                name = self.prefix + readout.suffix
                value = self.monitor.value(name)
                if not self.monitor.connected(name):
                    style = DISCONNECTED_STYLE
                elif readout.alarm is not None and readout.alarm(value):
                    style = ALARM_STYLE
                else:
                    style = OK_STYLE
                _show(self.labels[readout.suffix], readout.text(value), style)
        alarms = self.alarms()
        _show(self.alarm_line, "ALARM: " + "; ".join(alarms) if alarms else "no alarm",
              ALARM_STYLE if alarms else OK_STYLE)
        self._draw_trends()

    def _draw_trends(self) -> None:
        now = time.time()
        times, force = self.monitor.trend(self.prefix + "LOAD:FORCE_RBV")
        self.force_curve.setData(times - now, force)
        times, extension = self.monitor.trend(self.prefix + "LOAD:EXT_RBV")
        self.extension_curve.setData(times - now, extension * 1000.0)
        history, dt = self.value("PHYS:RESP_HIST"), self.value("PHYS:RESP_HIST_DT")
        if history is None or dt is None or np.ndim(history) == 0 or not len(history):
            return
        history = np.asarray(history, dtype=float)
        ages = -dt * np.arange(len(history))[::-1]
        self.breath_curve.setData(ages, history)
        gate_times, gate = self.monitor.trend(self.prefix + "PHYS:GATE")
        keep = gate_times - now >= ages[0]
        if keep.any():
            # Steps from each gate edge to the next (the last one to now), drawn at the waveform's top.
            gate_times, gate = gate_times[keep], gate[keep]
            edges = np.append(gate_times - now, 0.0)
            self.gate_curve.setData(edges, gate * float(history.max()))
            self.gate_curve.setFillLevel(float(history.min()))

    def put_setpoint(self) -> None:
        """Write the chosen set point in a thread; the reply comes back as :attr:`setpoint_done`."""
        label, text = self.setpoint.currentText(), self.setpoint_value.text().strip()
        try:
            value = float(text)
        except ValueError:
            self._show_reply(f"{label}: {text!r} is not a number", True)
            return
        threading.Thread(target=self._put, args=(label, value), name="set-point", daemon=True).start()

    def _put(self, label: str, value: float) -> None:
        suffix, message = SETPOINTS[label]
        if self.monitor.put(self.prefix + suffix, value):
            self.setpoint_done.emit(f"{label} = {value:g} written", False)
            return
        time.sleep(0.2)  # the device posts its reason on its message PV with the refusal
        self.setpoint_done.emit(f"{label} = {value:g} refused: {self.value(message) or 'no reason given'}", True)

    def _show_reply(self, text: str, refused: bool) -> None:
        _show(self.setpoint_reply, text, ALARM_STYLE if refused else OK_STYLE)

    def close_monitors(self) -> None:
        """Stop the Channel Access monitors."""
        self.monitor.close()
