"""The queue panel: the server's state, the queue and its history, progress, and the run controls."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .queue_controller import QueueController


def item_text(item: dict[str, Any]) -> str:
    """One queue or history item in a line: plan, its arguments, and how it ended."""
    kwargs = ", ".join(f"{key}={json.dumps(value)}" for key, value in item.get("kwargs", {}).items())
    result = item.get("result", {})
    ended = f"  → {result['exit_status']}" if result.get("exit_status") else ""
    reason = f" ({result['msg'].strip().splitlines()[-1]})" if result.get("msg", "").strip() else ""
    return f"{item.get('name', '?')}({kwargs}){ended}{reason}"


class QueuePanel(QWidget):
    """Start / pause / resume / abort / stop, the server's state, progress, queue and history.

    Parameters
    ----------
    controller : QueueController
        Where the buttons' requests go, and where the state comes from.
    """

    def __init__(self, controller: QueueController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for name, action in (("Start", controller.start), ("Pause", controller.pause),
                             ("Resume", controller.resume), ("Abort", controller.abort),
                             ("Stop after item", controller.stop_queue)):
            button = QPushButton(name)
            button.clicked.connect(action)
            self.buttons[name] = button
            row.addWidget(button)
        self.buttons["Abort"].setToolTip("pauses at once (shutter closed), then aborts; the files are kept")
        self.state = QLabel("connecting to the server…")
        self.state.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m frames")
        self.eta = QLabel("")
        self.running = QLabel("running: –")
        self.running.setWordWrap(True)
        self.queue = QListWidget()
        self.history = QListWidget()
        self.messages = QLabel("")
        self.messages.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.state)
        layout.addWidget(self.progress)
        layout.addWidget(self.eta)
        layout.addWidget(self.running)
        layout.addWidget(QLabel("queue"))
        layout.addWidget(self.queue, 1)
        layout.addWidget(QLabel("history"))
        layout.addWidget(self.history, 1)
        layout.addWidget(self.messages)
        controller.status.connect(self.show_status)
        controller.items.connect(self.show_items)
        controller.message.connect(self.show_message)
        self.last_status: dict[str, Any] = {}
        self.exit_statuses: list[str] = []

    def show_status(self, status: dict[str, Any]) -> None:
        """The manager's and the RunEngine's state; the buttons that apply now enabled."""
        self.last_status = status
        self.state.setText(f"manager {status.get('manager_state')}, RunEngine {status.get('re_state')}, "
                           f"{status.get('items_in_queue')} queued, {status.get('items_in_history')} done")
        re_state = status.get("re_state")
        self.buttons["Pause"].setEnabled(re_state == "running")
        self.buttons["Resume"].setEnabled(re_state == "paused")
        self.buttons["Abort"].setEnabled(re_state in ("running", "paused"))
        self.buttons["Start"].setEnabled(status.get("manager_state") == "idle")

    def show_items(self, queue: list[dict], history: list[dict], running: dict) -> None:
        """The queue, the history (newest first) and the running item."""
        self.queue.clear()
        self.queue.addItems([item_text(item) for item in queue])
        self.exit_statuses = [item.get("result", {}).get("exit_status", "") for item in history]
        self.history.clear()
        self.history.addItems([item_text(item) for item in reversed(history)])
        self.running.setText(f"running: {item_text(running)}" if running else "running: –")

    def show_progress(self, done: int, total: int, eta_s: float | None) -> None:
        """Frames acquired of the run's total, and the time left at the present rate."""
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))
        self.eta.setText(f"about {eta_s:.0f} s left" if eta_s is not None else "")

    def show_message(self, text: str, error: bool) -> None:
        """What the last request did, or why it was refused."""
        self.messages.setText(text)
        self.messages.setStyleSheet("color: #d32f2f; font-weight: bold;" if error else "")
