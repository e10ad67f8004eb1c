"""The runs panel: recent runs from the catalog, searched by subject and day; a run opened shows a frame and
its volume.

Every catalog request (Tiled over HTTP) runs in a worker thread; the table and images are
filled from Qt signals.
"""

from __future__ import annotations

import concurrent.futures
import datetime
from typing import Any

import h5py
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..config import Config

COLUMNS = ("time", "scan", "plan", "subject", "day", "status", "uid")


def run_row(uid: str, metadata: dict[str, Any]) -> tuple[str, ...]:
    """A run's line in the table, from its start and stop documents."""
    start, stop = metadata.get("start", {}), metadata.get("stop") or {}
    subject = start.get("subject") or {}
    when = datetime.datetime.fromtimestamp(start.get("time", 0)).strftime("%Y-%m-%d %H:%M:%S")
    return (when, str(start.get("scan_id", "")), start.get("plan_name", ""), str(subject.get("subject_id", "")),
            str(subject.get("day", "")), stop.get("exit_status", "running"), uid)


class CatalogClient(QObject):
    """Catalog requests in a worker thread: :meth:`search` answers :attr:`runs`, :meth:`open` :attr:`opened`."""

    runs = Signal(list)
    """Rows of :func:`run_row`, newest first."""
    opened = Signal(str, object, object)
    """A run's uid, its middle projection frame (or None) and the middle slice of its newest volume (or None)."""
    failed = Signal(str)

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.limit = config.gui.recent_runs
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="catalog-client")
        self._catalog: Any = None

    def _client(self) -> Any:
        if self._catalog is None:
            from ..pipeline.catalog import open_catalog

            self._catalog = open_catalog(self.config)
        return self._catalog

    def _guard(self, task) -> concurrent.futures.Future:
        def guarded() -> None:
            try:
                task()
            except Exception as exc:  # noqa: BLE001 -- a catalog that does not answer is shown, never fatal
                self.failed.emit(f"catalog: {type(exc).__name__}: {exc}")

        return self._worker.submit(guarded)

    def search(self, subject: str = "", day: str = "") -> concurrent.futures.Future:
        """The newest runs (raw scans, not analyses), of ``subject`` and ``day`` when given."""
        return self._guard(lambda: self._search(subject, day))

    def _search(self, subject: str, day: str) -> None:
        from tiled.queries import Key

        results = self._client()
        if subject:
            results = results.search(Key("start.subject.subject_id") == subject)
        if day:
            results = results.search(Key("start.subject.day") == float(day))
        rows = []
        for uid, run in results.items().tail(self.limit):
            if "raw_run_uid" not in run.metadata.get("start", {}):
                rows.append(run_row(uid, dict(run.metadata)))
        self.runs.emit(rows[::-1])

    def open(self, uid: str) -> concurrent.futures.Future:
        """Read run ``uid``'s middle projection and the middle slice of its newest volume."""
        return self._guard(lambda: self._open(uid))

    def _open(self, uid: str) -> None:
        from tiled.queries import Key

        catalog = self._client()
        run = catalog[uid]
        frame = None
        if "projections" in run:
            images = run["projections"]["image"]
            frame = np.asarray(images[images.shape[0] // 2])
        volume_slice = None
        for analysis in catalog.search(Key("start.raw_run_uid") == uid).values():
            if "volumes" in analysis:
                path = analysis["volumes"]["volume_file"].read()[-1]
                with h5py.File(path, "r") as h5:
                    volume_slice = np.asarray(h5["volume"][h5["volume"].shape[0] // 2])
        self.opened.emit(uid, frame, volume_slice)

    def close(self) -> None:
        """Finish the request under way; drop the rest."""
        self._worker.shutdown(wait=True, cancel_futures=True)


class RunsPanel(QWidget):
    """Search fields, the table of runs, and the opened run's frame and volume slice."""

    def __init__(self, client: CatalogClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.subject = QLineEdit()
        self.subject.setPlaceholderText("subject id")
        self.day = QLineEdit()
        self.day.setPlaceholderText("day")
        search = QPushButton("Search")
        search.clicked.connect(self.search)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.cellDoubleClicked.connect(lambda row, _column: self.open_row(row))
        self.status = QLabel("")
        graphics = pg.GraphicsLayoutWidget()
        self.frame_plot = graphics.addPlot(row=0, col=0, title="middle projection")
        self.volume_plot = graphics.addPlot(row=0, col=1, title="volume, middle slice")
        self.frame_image = pg.ImageItem(axisOrder="row-major")
        self.volume_image = pg.ImageItem(axisOrder="row-major")
        for plot, image in ((self.frame_plot, self.frame_image), (self.volume_plot, self.volume_image)):
            plot.setAspectLocked(True)
            plot.invertY(True)
            plot.addItem(image)
        fields = QHBoxLayout()
        fields.addWidget(self.subject)
        fields.addWidget(self.day)
        fields.addWidget(search)
        layout = QGridLayout(self)
        column = QVBoxLayout()
        column.addLayout(fields)
        column.addWidget(self.table, 1)
        column.addWidget(self.status)
        layout.addLayout(column, 0, 0)
        layout.addWidget(graphics, 0, 1)
        client.runs.connect(self.show_runs)
        client.opened.connect(self.show_run)
        client.failed.connect(self.status.setText)

    def search(self) -> concurrent.futures.Future:
        """Ask the catalog for the runs matching the fields."""
        self.status.setText("searching…")
        return self.client.search(self.subject.text().strip(), self.day.text().strip())

    def show_runs(self, rows: list[tuple[str, ...]]) -> None:
        """Fill the table."""
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, text in enumerate(row):
                self.table.setItem(index, column, QTableWidgetItem(text))
        self.status.setText(f"{len(rows)} runs")

    def open_row(self, row: int) -> concurrent.futures.Future:
        """Open the run of table row ``row``."""
        uid = self.table.item(row, COLUMNS.index("uid")).text()
        self.status.setText(f"opening {uid[:8]}…")
        return self.client.open(uid)

    def show_run(self, uid: str, frame: np.ndarray | None, volume_slice: np.ndarray | None) -> None:
        """Draw the opened run's frame and volume slice."""
        for image, data in ((self.frame_image, frame), (self.volume_image, volume_slice)):
            if data is not None:
                low, high = np.percentile(data, (1, 99))
                image.setImage(np.ascontiguousarray(data), autoLevels=False, levels=(float(low), float(high)))
        self.status.setText(f"run {uid[:8]}: frame {'shown' if frame is not None else 'none'}, "
                            f"volume {'shown' if volume_slice is not None else 'none yet'}")
