"""``nanoscope gui``: the operator console, against a running server or (``--sim``) one it starts itself.

With ``--sim`` it starts ``nanoscope serve --sim`` as a child process, takes the addresses
from its ready line, and stops it by its PID when the window closes. Otherwise the
addresses come from the configuration, or from ``--server`` (the server's ready line's
``key=value`` words). ``--screenshot PNG --after S`` saves the window after S seconds and
exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..child_process import ChildProcess
from ..config import Config
from ..errors import RefusedInput
from .addresses import Addresses

SERVE_READY = "nanoscope serve ready"
READY_MARKER = "nanoscope gui ready"
SIGNAL_CHECK_MS = 200
"""How often the Qt loop hands control to Python, so SIGINT/SIGTERM close the window."""


def add_gui_parser(subparsers, add_connection_options) -> None:
    """``nanoscope gui [--sim] [--prefix P] [--port N] [--server ADDRS] [--screenshot PNG --after S]``."""
    gui = subparsers.add_parser("gui", help="the operator console (PySide6 + pyqtgraph)")
    add_connection_options(gui)
    gui.add_argument("--sim", action="store_true", help="start the server and the simulator too; stop them on exit")
    gui.add_argument("--server", help="the server's addresses as its ready line prints them, e.g. "
                                      "'qserver=tcp://127.0.0.1:60615 zmq=tcp://127.0.0.1:60631 "
                                      "tiled=http://127.0.0.1:60600' (default: from the configuration)")
    gui.add_argument("--screenshot", type=Path, help="save the window to this PNG file and exit")
    gui.add_argument("--after", type=float, default=5.0, help="seconds before the screenshot (default 5)")
    gui.set_defaults(func=run_gui, with_config=True)


def start_server(config_path: str | Path | None = None, prefix: str | None = None, port: int | None = None,
                 timeout_s: float = 360.0) -> ChildProcess:
    """``nanoscope serve --sim`` as a child process, ready (its ready line in ``ready_line``); stop it by PID.

    Parameters
    ----------
    config_path : str or Path, optional
        The configuration file the server reads (default: the defaults).
    prefix, port : optional
        The simulator's PV prefix and CA port (default: the configuration's).
    timeout_s : float
        How long the server may take to print its ready line (it starts several parts).
    """
    argv = [sys.executable, "-m", "nanoscope_daq", "serve", "--sim"]
    for option, value in (("config", config_path), ("prefix", prefix), ("port", port)):
        if value is not None:
            argv += [f"--{option}", str(value)]
    server = ChildProcess("nanoscope serve --sim", argv, ready_marker=SERVE_READY, stop_signal=signal.SIGTERM)
    server.start(timeout=timeout_s)
    return server


def run_gui(args: argparse.Namespace, config: Config) -> int:
    """Open the console (starting the server with ``--sim``); returns when the window closes."""
    if args.screenshot is not None and args.after <= 0:
        raise RefusedInput(f"--after {args.after}: give the seconds to wait before the screenshot (> 0)")
    addresses = Addresses.from_config(config)
    if args.server:
        addresses = addresses.with_words(args.server)
    server = None
    if args.sim:
        server = start_server(args.config, args.prefix, args.port, 6 * config.server.start_timeout_s)
        print(f"nanoscope gui: started the server (pid {server.pid}): {server.ready_line}", flush=True)
    try:
        if server is not None:
            addresses = addresses.with_words(server.ready_line or "")
        return _run_window(config, addresses, args.screenshot, args.after)
    finally:
        if server is not None:
            server.stop(timeout=60.0)


def _run_window(config: Config, addresses: Addresses, screenshot: Path | None, after: float) -> int:
    from ..epics_env import configure_client

    configure_client([addresses.ca_port])  # before the window's modules import ophyd and pyepics
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from .main_window import ConsoleWindow

    app = QApplication.instance() or QApplication(["nanoscope gui"])
    window = ConsoleWindow(config, addresses)
    window.show()
    window.start()
    print(f"{READY_MARKER}: {addresses.prefix} on port {addresses.ca_port}, queue {addresses.qserver}", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: window.close())
    python_signals = QTimer()
    python_signals.timeout.connect(lambda: None)
    python_signals.start(SIGNAL_CHECK_MS)
    if screenshot is not None:
        def save() -> None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(screenshot))
            print(f"nanoscope gui: screenshot {screenshot}", flush=True)
            window.close()

        QTimer.singleShot(int(after * 1000), save)
    app.exec()
    app.processEvents()  # the closed window's deferred deletion (before Python's exit tears down its items)
    return 0
