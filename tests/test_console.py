"""The operator console (``nanoscope gui``) against the simulated instrument, offscreen (pytest-qt).

One server for the module (conftest's ``server``: ``nanoscope serve --sim`` with the tiny
leg, online segmentation on so the slices carry labels) and one console window on it. The
tests drive the window as an operator would: fill the form, press its buttons, and read
what it shows; the instrument's state is read back independently (raw CA reads, the
queue's history, the NXtomo files).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ca_write, ioc_get, wait_state, wait_until
from PySide6.QtCore import Qt
from pytestqt.exceptions import TimeoutError as WaitTimeout

from nanoscope_daq.gui.addresses import Addresses
from nanoscope_daq.gui.devices_panel import ALARM_STYLE

pytestmark = pytest.mark.slow

SUBJECT = {"subject_id": "M11", "cohort": "sham", "treatment": "vehicle", "day": 3, "anaesthesia": "isoflurane 2%"}
PROJECTIONS = 90


@pytest.fixture(scope="module")
def server_overrides() -> dict:
    return {"recon": {"online_segment": True}}


@pytest.fixture(scope="module")
def window(server, qapp):
    from nanoscope_daq.gui.main_window import ConsoleWindow

    addresses = Addresses.from_config(server.config).with_words(server.lines[-1])
    console = ConsoleWindow(server.config, addresses)
    console.show()
    console.start()
    yield console
    console.close()  # deletes the window (WA_DeleteOnClose) once the events below are processed
    qapp.processEvents()


def _wait_for_message(qtbot, window, text: str, timeout_ms: int = 60_000) -> None:
    try:
        qtbot.waitUntil(lambda: text in window.plans.message.text(), timeout=timeout_ms)
    except WaitTimeout:
        raise AssertionError(f"the form says {window.plans.message.text()!r}, not {text!r}") from None


def _press(qtbot, button) -> None:
    qtbot.waitUntil(button.isEnabled, timeout=30_000)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _queue_from_form(qtbot, window, plan: str, values: dict) -> None:
    page = window.plans.choose(plan)
    page.set_values(values)
    before = window.queue.last_status.get("items_in_queue", 0)
    qtbot.mouseClick(window.plans.queue_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.queue.last_status.get("items_in_queue", 0) == before + 1, timeout=60_000)
    assert window.plans.message.text().startswith(f"queued {plan}"), window.plans.message.text()


def test_the_console_shows_the_instrument_and_the_server(qtbot, window, server):
    qtbot.waitUntil(lambda: window.devices.value("SRC:STATE_RBV") in ("Off", "WarmingUp", "Ready", "On"),
                    timeout=30_000)
    qtbot.waitUntil(lambda: "manager idle" in window.queue.state.text(), timeout=30_000)
    assert window.devices.labels["SRC:SHUTTER_RBV"].text() == ioc_get(f"{server.config.epics.prefix}SRC:SHUTTER_RBV")
    qtbot.waitUntil(lambda: window.devices.value("PHYS:RATE") is not None, timeout=10_000)
    assert window.devices.alarms() == []
    assert "no alarm" in window.devices.alarm_line.text()


def test_an_invalid_form_is_refused_with_the_plans_message_and_nothing_is_queued(qtbot, window):
    page = window.plans.choose("fly_tomo")
    page.set_values({"projections": 1, "subject": SUBJECT})
    qtbot.mouseClick(window.plans.queue_button, Qt.MouseButton.LeftButton)
    _wait_for_message(qtbot, window, "give at least 2 projections")
    page.set_values({"projections": "many"})
    qtbot.mouseClick(window.plans.queue_button, Qt.MouseButton.LeftButton)
    assert "invalid int value: 'many'" in window.plans.message.text()
    assert window.queue.last_status["items_in_queue"] == 0


def test_a_fly_scan_from_the_form_shows_frames_sinogram_and_slices_and_pauses_and_resumes(qtbot, window, server):
    prefix = server.config.epics.prefix
    _queue_from_form(qtbot, window, "source_on", {})
    _queue_from_form(qtbot, window, "fly_tomo", {"projections": PROJECTIONS, "velocity": 15.0, "subject": SUBJECT})
    frames_before = window.camera.frames_shown
    _press(qtbot, window.queue.buttons["Start"])
    qtbot.waitUntil(lambda: window.sinogram.projections >= PROJECTIONS // 3
                    and window.queue.progress.value() >= PROJECTIONS // 3, timeout=180_000)
    assert window.camera.frames_shown > frames_before
    _press(qtbot, window.queue.buttons["Pause"])
    qtbot.waitUntil(lambda: window.queue.last_status.get("re_state") == "paused", timeout=30_000)
    qtbot.waitUntil(lambda: window.devices.value("SRC:SHUTTER_RBV") == "Closed", timeout=10_000)
    assert ioc_get(f"{prefix}SRC:SHUTTER_RBV") == "Closed"
    _press(qtbot, window.queue.buttons["Resume"])
    qtbot.waitUntil(lambda: window.queue.last_status.get("manager_state") == "idle"
                    and len(window.queue.exit_statuses) == 2, timeout=240_000)
    assert window.sinogram.projections == PROJECTIONS
    assert window.queue.exit_statuses == ["completed", "completed"]
    fly_page = window.plans.page["fly_tomo"]
    fly_page.show_dose()
    used = float(fly_page.dose_label.text().split(": ")[1].split(" Gy")[0])
    assert used > 0 and "remaining" in fly_page.dose_label.text()
    # The online reconstruction's slices, then the segmentation's labels over them.
    qtbot.waitUntil(lambda: window.slices.updates >= 1, timeout=240_000)
    qtbot.waitUntil(lambda: bool(window.slices.labels), timeout=240_000)
    xy = window.slices.slices["xy"]
    assert xy.ndim == 2 and np.isfinite(xy).all() and xy.std() > 0
    assert window.slices.labels["xy"].shape == xy.shape and window.slices.labels["xy"].max() > 0
    # The segmented tomogram's morphometry, plotted at its time point.
    qtbot.waitUntil(lambda: 0 in window.trend.points, timeout=120_000)
    measures = window.trend.points[0]
    assert 0 < measures["bv_tv"] < 1 and 0 <= measures["porosity"] < 1, measures
    assert "time point 0: BV/TV" in window.trend.plot.plotItem.titleLabel.text


def test_the_runs_panel_finds_the_scan_by_subject_and_opens_its_frame_and_volume(qtbot, window):
    runs = window.runs
    runs.subject.setText(SUBJECT["subject_id"])

    def listed() -> list[str]:
        runs.search().result(timeout=30)  # the catalog writer may still be storing the stop document
        qtbot.wait(200)  # the table is filled from the catalog thread's signal
        return [runs.table.item(0, column).text() for column in (2, 3, 5)] if runs.table.rowCount() == 1 else []

    qtbot.waitUntil(lambda: listed() == ["fly_tomo", "M11", "success"], timeout=90_000)
    runs.open_row(0)
    qtbot.waitUntil(lambda: "frame shown" in runs.status.text(), timeout=60_000)
    assert runs.status.text().endswith("volume shown")
    assert runs.frame_image.image.shape[0] > 0 and runs.volume_image.image.ndim == 2


def test_abort_closes_the_shutter_and_keeps_the_files(qtbot, window, server):
    _queue_from_form(qtbot, window, "fly_tomo", {"projections": PROJECTIONS, "velocity": 10.0,
                                                 "subject": {**SUBJECT, "subject_id": "M13"}})
    _press(qtbot, window.queue.buttons["Start"])
    qtbot.waitUntil(lambda: window.queue.last_status.get("re_state") == "running", timeout=60_000)
    qtbot.waitUntil(lambda: window.sinogram.projections >= 10, timeout=120_000)
    _press(qtbot, window.queue.buttons["Abort"])
    qtbot.waitUntil(lambda: window.queue.last_status.get("manager_state") == "idle"
                    and len(window.queue.exit_statuses) == 3, timeout=120_000)
    assert "aborted" in window.queue.messages.text()
    assert window.queue.exit_statuses[-1] == "aborted"
    assert ioc_get(f"{server.config.epics.prefix}SRC:SHUTTER_RBV") == "Closed"


def test_killing_the_console_mid_scan_leaves_the_scan_to_finish_with_complete_files(server):
    from bluesky_queueserver_api import BPlan

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(Path(__file__).parents[1])}
    console = subprocess.Popen([sys.executable, "-m", "nanoscope_daq", "gui", "--server", server.lines[-1],
                                "--config", str(server.config_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in console.stdout:
            if "nanoscope gui ready" in line:
                break
        assert console.poll() is None, "the console exited before it was ready"
        api = server.api()
        assert api.item_add(BPlan("source_on", "xrm"))["success"]  # whatever the tests before left the source in
        assert api.item_add(BPlan("fly_tomo", "xrm", projections=PROJECTIONS, velocity=15.0,
                                  subject={**SUBJECT, "subject_id": "M12"}))["success"]
        api.queue_start()
        wait_state(api, lambda s: s["re_state"] == "running" and s["items_in_queue"] == 0, 120, "the scan running")
        wait_until(lambda: ioc_get(f"{server.config.epics.prefix}ROT.RBV") > 30.0, timeout=60,
                   what="the rotation under way")
    finally:
        console.send_signal(signal.SIGKILL)
        console.wait(10)
    assert console.returncode == -signal.SIGKILL
    wait_state(api, lambda s: s["manager_state"] == "idle", 240, "the queue run out")
    last = api.history_get()["items"][-1]
    assert last["result"]["exit_status"] == "completed", last
    (uid,) = last["result"]["run_uids"]
    (nxs,) = sorted(Path(server.config.paths.data_dir).rglob(f"*{uid[:8]}*.nxs"))
    with h5py.File(nxs, "r") as h5:
        keys = h5["entry/instrument/detector/image_key"][()]
        data = h5["entry/instrument/detector/data"]
        assert data.shape[0] == len(keys)
        assert np.count_nonzero(keys == 0) == PROJECTIONS
        assert data[-1].max() > 0


def test_a_set_point_the_device_refuses_shows_its_reason(qtbot, window, server):
    devices = window.devices
    high = ioc_get(f"{server.config.epics.prefix}PHYS:RATE_HI")
    low = ioc_get(f"{server.config.epics.prefix}PHYS:RATE_LO")
    devices.setpoint.setCurrentText("respiration rate low limit (bpm)")
    devices.setpoint_value.setText(str(high + 10))
    devices.put_setpoint()
    qtbot.waitUntil(lambda: "refused" in devices.setpoint_reply.text(), timeout=10_000)
    assert "RATE_HI" in devices.setpoint_reply.text() or "below" in devices.setpoint_reply.text()
    assert ioc_get(f"{server.config.epics.prefix}PHYS:RATE_LO") == pytest.approx(low)
    devices.setpoint_value.setText(str(low - 1))  # a wider range: no alarm for the tests after this one
    devices.put_setpoint()
    qtbot.waitUntil(lambda: devices.setpoint_reply.text().endswith("written"), timeout=10_000)
    assert ioc_get(f"{server.config.epics.prefix}PHYS:RATE_LO") == pytest.approx(low - 1)


def test_a_source_interlock_trip_is_shown_as_an_alarm(qtbot, window, server):
    prefix = server.config.epics.prefix
    ca_write(f"{prefix}SRC:TRIP", "Trip")
    qtbot.waitUntil(lambda: "source interlock: Tripped" in window.devices.alarm_line.text(), timeout=10_000)
    assert window.devices.alarm_line.text().startswith("ALARM")
    assert window.devices.labels["SRC:INTLK_RBV"].styleSheet() == ALARM_STYLE
    ca_write(f"{prefix}SRC:INTLK_RESET", "Reset")
    qtbot.waitUntil(lambda: not [alarm for alarm in window.devices.alarms() if alarm.startswith("source")],
                    timeout=10_000)
