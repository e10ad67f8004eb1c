"""The console's window: camera, live sinogram and slices, devices, plans and queue on one page; runs on another.

Wires the sources (Channel Access preview and monitors, the documents feed, the queue
and catalog clients, each off the GUI thread) to the views, and redraws the readbacks
and polls the queue at ``[gui] status_rate_hz``. Closing it stops the console's own
threads only: the scan under way runs on in the server.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QMainWindow, QSplitter, QTabWidget, QVBoxLayout, QWidget

from ..config import Config
from .addresses import Addresses
from .camera_view import CameraView
from .devices_panel import DevicesPanel
from .documents_feed import DocumentsFeed
from .live_scan import LiveScan
from .live_views import MorphometryTrend, SinogramView, SlicesView
from .plan_form import PlanForm, dose_line
from .preview_source import PreviewSource
from .queue_controller import QueueController
from .queue_panel import QueuePanel
from .runs_panel import CatalogClient, RunsPanel

WINDOW_SIZE = (1860, 1040)


def console_config(config: Config, addresses: Addresses) -> Config:
    """``config`` with the instrument and catalog the console was pointed at."""
    return config.replace(epics={"prefix": addresses.prefix, "port": addresses.ca_port},
                          catalog={"uri": addresses.tiled})


class ConsoleWindow(QMainWindow):
    """The operator console of the instrument at ``addresses`` (the IOCs and the server).

    Parameters
    ----------
    config : Config
        The configuration (``[gui]`` and the plans' settings).
    addresses : Addresses
        Where the server's parts and the IOCs are.
    """

    def __init__(self, config: Config, addresses: Addresses) -> None:
        super().__init__()
        self.config = console_config(config, addresses)
        self.addresses = addresses
        gui = self.config.gui
        # Deleted (C++ side first) when closed: left to Python's exit, pyqtgraph's items crash PySide6 6.12.
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(f"nanoscope console — {addresses.prefix} — {addresses.qserver}")
        self.resize(*WINDOW_SIZE)

        self.camera = CameraView(gui.saturation_counts, gui.display_max_size)
        self.preview = PreviewSource(addresses.prefix, gui.view_rate_hz)
        self.sinogram = SinogramView()
        self.slices = SlicesView()
        self.trend = MorphometryTrend()
        self.devices = DevicesPanel(addresses.prefix, gui.trend_s)
        self.controller = QueueController(self.config, addresses.qserver)
        self.plans = PlanForm(lambda subject_id: dose_line(self.config, subject_id))
        self.queue = QueuePanel(self.controller)
        self.live = LiveScan()
        self.feed = DocumentsFeed(addresses.zmq, self.live)
        self.catalog = CatalogClient(self.config)
        self.runs = RunsPanel(self.catalog)

        self.preview.frame.connect(self.camera.show_frame)
        self.camera.frame_drawn.connect(self.preview.drawn)
        self.live.sinogram.connect(self.sinogram.show_sinogram)
        self.live.slices.connect(self.slices.show_slices)
        self.live.labels.connect(self.slices.show_labels)
        self.live.measures.connect(self.trend.add_point)
        self.live.started.connect(lambda start: self.trend.clear())
        self.live.progress.connect(self.queue.show_progress)
        self.live.finished.connect(lambda status: self.runs.search())
        self.sinogram.row_chosen.connect(self.live.choose_row)
        self.plans.submitted.connect(self.controller.submit)
        self.controller.message.connect(self.plans.show_message)

        self.setCentralWidget(self._layout())
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / gui.status_rate_hz))
        self.timer.timeout.connect(self.refresh)

    def _layout(self) -> QTabWidget:
        live = QSplitter(Qt.Orientation.Vertical)
        live.addWidget(self.camera)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.sinogram)
        lower.addWidget(self.slices)
        lower.addWidget(self.trend)
        lower.setSizes([250, 450, 250])
        live.addWidget(lower)
        live.setSizes([600, 340])
        control = QSplitter(Qt.Orientation.Vertical)
        control.addWidget(self.plans)
        control.addWidget(self.queue)
        scan = QSplitter(Qt.Orientation.Horizontal)
        scan.addWidget(live)
        scan.addWidget(self.devices)
        scan.addWidget(control)
        scan.setSizes([760, 640, 460])
        tabs = QTabWidget()
        tabs.addTab(scan, "Scan")
        runs = QWidget()
        QVBoxLayout(runs).addWidget(self.runs)
        tabs.addTab(runs, "Runs")
        return tabs

    def start(self) -> None:
        """Start reading: the preview, the documents, the queue's state, the catalog's runs."""
        self.preview.start()
        self.feed.start()
        self.controller.connect()
        self.timer.start()
        self.runs.search()

    def refresh(self) -> None:
        """Redraw the readbacks; ask for the queue's state."""
        self.devices.refresh()
        self.controller.poll()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 -- Qt's name
        """Stop the console's threads and monitors (nothing on the server)."""
        self.timer.stop()
        self.preview.stop()
        self.feed.stop()
        self.controller.close()
        self.catalog.close()
        self.devices.close_monitors()
        super().closeEvent(event)
