"""The operator console's cost: the live view at 40 fps of 2048x2048 frames; CPU and memory idle and in a scan.

Three cases; ``view`` is the camera view alone (``CameraView``) fed 2048x2048 frames from
memory at 40 Hz, drawn at most 1024 and 2048 pixels a side: the live view's own cost, free of
the simulator's preview rate. The other two each have a console window
(``nanoscope_daq.gui.main_window.ConsoleWindow``) in this process, offscreen
(``QT_QPA_PLATFORM=offscreen`` unless a display is set); the
driver runs in a thread, the window in the main thread, as in ``nanoscope gui``:

* ``live``: ``nanoscope sim`` with the preview at 40 Hz, unbinned (``sim.camera.preview_max_size
  = 2048``) and binned to 512 by the IOC (``--preview-sizes``); the camera streams
  ``--frames`` full frames (2048x2048 Mono12 at 40 fps, darks: bench_camera_stream's ``full``
  case, its ``capture``) into HDF1 while the window shows the preview. Reported: this
  process's CPU (% of one core) over the capture, preview frames produced / read / drawn,
  RSS, and the acquisition's own loss counters (frames in the file = frames requested,
  DroppedArrays, BufferStalls, MissedTriggers, FramesLost all 0).
* ``scan``: ``nanoscope serve --sim`` (the tiny leg, as the tests), a window on it: CPU and
  RSS over ``--idle-s`` seconds idle, then over a queued ``source_on`` + ``fly_tomo``.

The CPU figures are the console's process (its Qt thread, CA, 0MQ and client threads; the
driver's few CA reads are included); the simulator and the server are other processes.
The machine may be shared: the load average is reported with each case.

Usage: python benchmarks/bench_console.py [--frames 400] [--cases view,live,scan] [--projections 180]
       xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_console.py --cases scan \\
           --screenshots docs/console      (the screenshots of docs/console.md; CPU figures then include the grabs)
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from bench_camera_stream import write_report

from nanoscope_daq.config import load_config, overrides_toml
from nanoscope_daq.epics_env import configure_client, free_port, free_ports

RESULTS = Path(__file__).parent / "results" / "bench_console.json"
PREVIEW_RATE_HZ = 40.0
SAMPLE_S = 0.5
GRABS: queue.Queue = queue.Queue()
"""Screenshots asked for by the driver thread, taken in the GUI thread (a widget is grabbed only there)."""


def screenshot(widget, path: Path) -> None:
    """Save ``widget`` as PNG ``path`` (from the driver thread: waits until the GUI thread has saved it)."""
    done = threading.Event()
    GRABS.put((widget, path, done))
    done.wait(30)
    print(f"screenshot: {path}", flush=True)


def _take_grabs() -> None:
    while not GRABS.empty():
        widget, path, done = GRABS.get()
        path.parent.mkdir(parents=True, exist_ok=True)
        widget.grab().save(str(path))
        done.set()


class Meter:
    """CPU (% of one core) and peak RSS of this process between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak_rss_mb = max(self.peak_rss_mb, self.process.memory_info().rss / 2**20)

    def start(self) -> Meter:
        self._cpu, self._wall, self._load = sum(self.process.cpu_times()[:2]), time.monotonic(), os.getloadavg()[0]
        self.peak_rss_mb = self.process.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._wall
        return {"seconds": round(wall, 1),
                "cpu_percent_of_one_core": round(100 * (sum(self.process.cpu_times()[:2]) - self._cpu) / wall, 1),
                "peak_rss_mb": round(self.peak_rss_mb, 1),
                "rss_mb_end": round(self.process.memory_info().rss / 2**20, 1),
                "load_average_1min": [round(self._load, 2), round(os.getloadavg()[0], 2)]}


def with_window(config, addresses, drive: Callable[[object], dict]) -> dict:
    """Open a console window, run ``drive(window)`` in a thread, close the window when it returns."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from nanoscope_daq.gui.main_window import ConsoleWindow

    app = QApplication.instance() or QApplication(["bench_console"])
    window = ConsoleWindow(config, addresses)
    window.show()
    window.start()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome.update(drive(window))
        except BaseException as exc:  # noqa: BLE001 -- reported after the window closes
            outcome["error"] = exc

    driver = threading.Thread(target=run, daemon=True)
    driver.start()
    closer = QTimer()
    def serve_or_close() -> None:
        if driver.is_alive():
            _take_grabs()
        else:
            closer.stop()
            window.close()

    closer.timeout.connect(serve_or_close)
    closer.start(200)
    app.exec()
    app.processEvents()
    if "error" in outcome:
        raise outcome["error"]
    return outcome


def view_case(seconds: float, display_max_size: int) -> dict:
    """The camera view alone, fed 2048x2048 frames (int32, as Channel Access delivers the preview) at 40 Hz."""
    import numpy as np
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from nanoscope_daq.gui.camera_view import CameraView

    app = QApplication.instance()
    view = CameraView(load_config().gui.saturation_counts, display_max_size)
    view.resize(760, 600)
    view.show()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 4000, (2048, 2048), dtype=np.int32) for _ in range(4)]
    timer = QTimer()
    timer.setInterval(round(1000 / PREVIEW_RATE_HZ))
    timer.timeout.connect(lambda: view.show_frame(frames[view.frames_shown % len(frames)]))
    meter = Meter().start()
    timer.start()
    QTimer.singleShot(round(1000 * seconds), app.quit)
    app.exec()
    timer.stop()
    figures = meter.stop()
    drawn = view.frames_shown
    view.close()
    return {"case": f"camera view alone: 2048x2048 frames at {PREVIEW_RATE_HZ:g} Hz, drawn at most "
                    f"{display_max_size} a side", **figures, "frames_drawn": drawn,
            "frames_per_s": round(drawn / figures["seconds"], 1),
            "cpu_ms_per_frame": round(10 * figures["cpu_percent_of_one_core"] * figures["seconds"] / drawn, 2)}


def live_case(frames: int, preview_size: int, data_dir: Path) -> dict:
    """The preview at 40 Hz, binned by the IOC to ``preview_size`` a side (2048: not binned), shown while the
    camera streams ``frames`` 2048x2048 frames at 40 fps into HDF1."""
    import epics
    from bench_camera_stream import PREFIX, Case, Pvs, capture

    from nanoscope_daq.gui.addresses import Addresses
    from nanoscope_daq.sim.process import SimProcess

    config_path = data_dir / "live.toml"
    config_path.write_text(overrides_toml({"sim": {"camera": {"preview_max_size": preview_size,
                                                              "preview_rate_hz": PREVIEW_RATE_HZ}}}))
    port = int(os.environ["EPICS_CA_ADDR_LIST"].split(":")[-1])
    config = load_config(config_path)
    addresses = Addresses.from_config(config).with_words(f"prefix={PREFIX} ca=127.0.0.1:{port}")
    with SimProcess(PREFIX, port, data_dir=data_dir, config=config_path) as sim:
        case = Case("1x1 Mono12 40 fps, darks", 1, 0.0039, 0.025, False, False, frames)

        def drive(window) -> dict:
            pvs = Pvs(epics)
            warm_up = capture(pvs, Case(case.name, 1, 0.0039, 0.025, False, False, 10), data_dir / "live", sim.pid)
            Path(warm_up["path"]).unlink()  # not measured: the render workers start, the detector maps are built
            shown, read, produced = window.camera.frames_shown, window.preview.frames_read, \
                window.preview.frames_produced
            meter = Meter().start()
            acquisition = capture(pvs, case, data_dir / "live", sim.pid)
            figures = meter.stop()
            Path(acquisition.pop("path")).unlink()
            return {"case": f"live view: 2048x2048 frames at 40 fps, preview {preview_size} a side at "
                            f"{PREVIEW_RATE_HZ:g} Hz", **figures,
                    "preview_frames_produced": window.preview.frames_produced - produced,
                    "preview_frames_read": window.preview.frames_read - read,
                    "frames_drawn": window.camera.frames_shown - shown,
                    "frame_shape": list(window.camera.frame.shape) if window.camera.frame is not None else None,
                    "acquisition": {key: acquisition[key] for key in (
                        "frames_requested", "array_counter_delta", "num_captured", "frames_in_file", "DroppedArrays",
                        "BufferStalls", "MissedTriggers", "FramesLost", "sensor_fps", "delivered_fps")}}

        return with_window(config, addresses, drive)


def scan_case(projections: int, idle_s: float, data_dir: Path, screenshots: Path | None) -> dict:
    """The console on ``nanoscope serve --sim`` (tiny leg, online segmentation): idle, then over a queued fly scan.

    With ``screenshots``, the window, the camera, the devices panel and the slices are saved there
    mid-scan, and the window and slices again once the segmentation's labels are shown.
    """
    from bluesky_queueserver_api import BPlan
    from bluesky_queueserver_api.zmq import REManagerAPI

    from nanoscope_daq.gui.addresses import Addresses
    from nanoscope_daq.gui.app import start_server
    from nanoscope_daq.physics.presets import tiny_leg_overrides

    port = int(os.environ["EPICS_CA_ADDR_LIST"].split(":")[-1])
    ports = free_ports(6)
    overrides = {**tiny_leg_overrides(), "scan": {"darks": 4, "flats": 4, "flats_offset_mm": 0.5},
                 "epics": {"prefix": "BENCHGUI:", "port": port}, "paths": {"data_dir": str(data_dir / "server")},
                 "dose": {"ledger_path": str(data_dir / "dose.sqlite")},
                 "server": {"redis_port": ports[0], "control_port": ports[1], "info_port": ports[2],
                            "documents_in_port": ports[3], "documents_out_port": ports[4], "tiled_port": ports[5],
                            "redis_name_prefix": f"bench_console_{os.getpid()}"}}
    overrides["sim"] = {**overrides["sim"], "time_scale": 50.0}
    overrides["recon"] = {"online_segment": True}
    config_path = data_dir / "scan.toml"
    config_path.write_text(overrides_toml(overrides))
    config = load_config(config_path)
    server = start_server(config_path)
    try:
        addresses = Addresses.from_config(config).with_words(server.ready_line or "")

        def drive(window) -> dict:
            time.sleep(5.0)  # the window's first catalog search and connections settle
            meter = Meter().start()
            time.sleep(idle_s)
            idle = meter.stop()
            api = REManagerAPI(zmq_control_addr=addresses.qserver, timeout_recv=10)
            api.item_add(BPlan("source_on", "xrm"))
            api.item_add(BPlan("fly_tomo", "xrm", projections=projections, velocity=20.0,
                               subject={"subject_id": "B1", "cohort": "bench", "treatment": "none", "day": 0,
                                        "anaesthesia": "isoflurane 2%"}))
            meter = Meter().start()
            api.queue_start()
            taken = screenshots is None
            while api.status()["manager_state"] != "idle":
                if not taken and window.sinogram.projections >= projections // 2:
                    for name, widget in (("console-scan", window), ("console-camera", window.camera),
                                         ("console-devices", window.devices), ("console-live", window.slices)):
                        screenshot(widget, screenshots / f"{name}.png")
                    taken = True
                time.sleep(0.5)
            scan = meter.stop()
            if screenshots is not None:
                deadline = time.monotonic() + 300
                while not window.slices.labels and time.monotonic() < deadline:
                    time.sleep(1.0)
                screenshot(window, screenshots / "console-after-scan.png")
                screenshot(window.slices, screenshots / "console-slices-labels.png")
            history = [item["result"]["exit_status"] for item in api.history_get()["items"]]
            api.close()
            return {"case": "console on the server: idle, then source_on + fly_tomo", "idle": idle,
                    "scan": {**scan, "projections": projections, "exit_statuses": history,
                             "sinogram_rows": window.sinogram.projections, "preview_frames_drawn":
                             window.camera.frames_shown, "slice_updates": window.slices.updates}}

        return with_window(config, addresses, drive)
    finally:
        server.stop(timeout=60.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=400, help="frames streamed in the live case (default 400: 10 s)")
    parser.add_argument("--preview-sizes", default="2048,512",
                        help="live case: the IOC's preview binned to these sizes a side (2048: every pixel)")
    parser.add_argument("--projections", type=int, default=180, help="projections of the scan case's fly scan")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds measured idle in the scan case")
    parser.add_argument("--cases", default="view,live,scan", help="comma-separated: view, live, scan")
    parser.add_argument("--screenshots", type=Path, help="scan case: save screenshots of the console into this "
                                                           "directory (run under Xvfb: xvfb-run -a ...)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    configure_client([free_port()])  # before pyepics loads libca; the simulator (and server) take this port
    from PySide6.QtWidgets import QApplication

    _app = QApplication(["bench_console"])  # first: a display that cannot be opened aborts before anything starts
    data_dir = Path(tempfile.mkdtemp(prefix="nanoscope-bench-console-"))
    results = []
    try:
        for name in args.cases.split(","):
            if name == "view":
                for size in (1024, 2048):
                    results.append(view_case(10.0, size))
                    print(json.dumps(results[-1], indent=2), flush=True)
                continue
            if name == "live":
                for size in args.preview_sizes.split(","):
                    results.append(live_case(args.frames, int(size), data_dir))
                    print(json.dumps(results[-1], indent=2), flush=True)
                continue
            elif name == "scan":
                results.append(scan_case(args.projections, args.idle_s, data_dir, args.screenshots))
            else:
                raise SystemExit(f"unknown case {name!r}; choose from view, live, scan")
            print(json.dumps(results[-1], indent=2), flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    write_report("bench_console", results, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
