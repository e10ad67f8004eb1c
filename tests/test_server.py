"""The instrument server end to end: ``nanoscope serve --sim``, the queue, the catalog, the live analysis.

One server for the module (conftest's ``server`` fixture; it takes tens of seconds to
start): Redis, Tiled, the 0MQ proxy, the RE Manager and ``nanoscope live``, each a child
process on ports of this test alone, with a Redis name prefix of its own. Items go in through bluesky-queueserver-api
and the ``nanoscope queue`` command; runs come back through the Tiled client.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
from conftest import ioc_get, wait_state, wait_until

from nanoscope_daq.config import overrides_toml
from nanoscope_daq.epics_env import free_ports

pytestmark = pytest.mark.slow

SUBJECT = {"subject_id": "M07", "cohort": "ovx", "treatment": "PTH", "day": 14, "anaesthesia": "isoflurane 2%"}
PROJECTIONS = 180


def test_ready_line_names_every_address_on_loopback(server):
    ready = server.ready
    for key in ("qserver", "qinfo", "zmq", "tiled", "ca", "prefix"):
        assert key in ready, server.lines[-1]
    for key in ("qserver", "qinfo", "zmq", "tiled"):
        assert "127.0.0.1" in ready[key]
    listening = {c.laddr.port: c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN"}
    for port in server.ports[1:]:
        assert listening.get(port) == "127.0.0.1", (port, listening.get(port))


def test_a_queued_fly_scan_pauses_resumes_and_lands_in_the_catalog_and_the_live_analysis(server):
    from bluesky_queueserver_api import BPlan

    api = server.api()
    assert api.item_add(BPlan("source_on", "xrm"))["success"]
    assert api.item_add(BPlan("fly_tomo", "xrm", projections=PROJECTIONS, velocity=20.0, flats_when="both",
                              subject=SUBJECT))["success"]
    api.queue_start()
    wait_state(api, lambda s: s["items_in_history"] == 1 and s["re_state"] == "running", 120,
                "the fly scan running")
    wait_until(lambda: ioc_get(f"{server.config.epics.prefix}ROT.RBV") > 60.0, timeout=60,
               what="the rotation a third of the way")
    api.re_pause("immediate")
    wait_state(api, lambda s: s["re_state"] == "paused", 30, "paused")
    assert ioc_get(f"{server.config.epics.prefix}SRC:SHUTTER_RBV") == "Closed"
    time.sleep(1.0)
    api.re_resume()
    status = wait_state(api, lambda s: s["manager_state"] == "idle", 240, "the queue run out")
    assert status["items_in_history"] == 2
    history = api.history_get()["items"]
    assert [item["result"]["exit_status"] for item in history] == ["completed", "completed"], history
    (uid,) = history[1]["result"]["run_uids"]

    # The NXtomo file, written in the worker: every grid angle exactly once.
    (nxs,) = sorted(Path(server.config.paths.data_dir).rglob(f"*{uid[:8]}*.nxs"))
    with h5py.File(nxs, "r") as h5:
        keys = h5["entry/instrument/detector/image_key"][()]
        angles = h5["entry/sample/rotation_angle"][()]
    projection_angles = angles[keys == 0]
    assert len(projection_angles) == PROJECTIONS  # 0 lost, 0 duplicated
    step = np.diff(projection_angles)
    np.testing.assert_allclose(step, step.mean(), atol=0.05)

    # The catalog: found by subject, day and plan; a frame and the angles read back through Tiled.
    from tiled.queries import Key

    catalog = server.catalog()
    wait_until(lambda: uid in catalog and "stop" in catalog[uid].metadata, timeout=60, what="the run catalogued")
    assert list(catalog.search(Key("start.subject.subject_id") == "M07").search(Key("start.plan_name") == "fly_tomo"))\
        == [uid]
    run = catalog.search(Key("start.subject.subject_id") == "M07").search(Key("start.subject.day") == 14)[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    projections = run["projections"]
    assert projections["image"].shape[0] == PROJECTIONS
    np.testing.assert_allclose(projections["rotation_angle"].read(), projection_angles, atol=1e-6)
    camera_file = Path(run["projections"]["image"].data_sources()[0].assets[0].data_uri.removeprefix("file://localhost"))
    with h5py.File(camera_file, "r", swmr=True) as h5:
        first = int(np.flatnonzero(h5["entry/instrument/NDAttributes/FrameType"][()] == 0)[0])
        np.testing.assert_array_equal(projections["image"][0], h5["entry/data/data"][first])

    # The live analysis process: its run, linked to the scan, names the online volume it wrote.
    wait_until(lambda: len(catalog.search(Key("start.raw_run_uid") == uid)) == 1, timeout=240,
               what="the online analysis run")
    analysis = catalog.search(Key("start.raw_run_uid") == uid).values().first()
    wait_until(lambda: "volumes" in analysis, timeout=240, what="the online volume")
    (volume_file,) = analysis["volumes"]["volume_file"].read()
    with h5py.File(volume_file, "r") as h5:
        assert h5["volume"].ndim == 3


def test_the_allowlist_refuses_other_plans_devices_and_code(server):
    from bluesky_queueserver_api import BFunc, BPlan
    from bluesky_queueserver_api.comm_base import RequestFailedError

    api = server.api()
    before = api.status()["items_in_queue"]
    for item, reason in ((BPlan("count", ["xrm"]), "not in the list of allowed plans"),
                         (BPlan("fly_tomo", "xrm.rot"), "xrm.rot"),
                         (BPlan("fly_tomo", "xrm", projections="many"), "projections")):
        with pytest.raises(RequestFailedError, match=reason):
            api.item_add(item)
    with pytest.raises(RequestFailedError, match="is not allowed"):
        api.function_execute(BFunc("print", "hello"))
    assert api.status()["items_in_queue"] == before


def test_queue_add_refuses_a_bad_parameter_with_the_plans_message(server):
    result = server.cli("queue", "add", "fly_tomo", "--projections", "1")
    assert result.returncode == 2, result.stderr
    assert "projections" in result.stderr and "give at least 2 projections" in result.stderr
    assert "Traceback" not in result.stderr
    status = server.cli("queue", "status")
    assert "items_in_queue=0" in status.stdout


def test_killing_the_live_analysis_leaves_the_scan_alone_and_it_catches_up_from_the_catalog(server):
    from bluesky_queueserver_api import BPlan
    from tiled.queries import Key

    api = server.api()
    live = server.child(" live --config")
    assert api.item_add(BPlan("fly_tomo", "xrm", projections=60, subject={**SUBJECT, "day": 15}))["success"]
    api.queue_start()
    wait_state(api, lambda s: s["re_state"] == "running", 60, "the scan running")
    live.kill()
    status = wait_state(api, lambda s: s["manager_state"] == "idle", 240, "the queue run out")
    last = api.history_get()["items"][-1]
    assert last["result"]["exit_status"] == "completed", last
    assert status["worker_environment_exists"]
    (uid,) = last["result"]["run_uids"]
    wait_until(lambda: (again := server.child(" live --config")) is not None and again.pid != live.pid,
               timeout=120, what="the server starting the live analysis again")
    # The run it missed is reconstructed from the NXtomo file the catalog links, and linked back.
    catalog = server.catalog()
    caught_up = (catalog.search(Key("start.raw_run_uid") == uid)
                 .search(Key("start.analysis") == "catch_up_reconstruction"))
    wait_until(lambda: len(caught_up) == 1, timeout=300, what="the caught-up analysis run")
    analysis = caught_up.values().first()
    wait_until(lambda: "stop" in catalog[analysis.metadata["start"]["uid"]].metadata, timeout=300,
               what="the caught-up reconstruction finished")
    (volume_file,) = catalog[analysis.metadata["start"]["uid"]]["volumes"]["volume_file"].read()
    with h5py.File(volume_file, "r") as h5:
        assert h5["volume"].ndim == 3 and np.isfinite(h5["volume"][()]).all()


def test_analyze_selects_the_subjects_scans_from_the_catalog_and_links_each_result_there(server, tmp_path):
    import json

    from tiled.queries import Key

    args = ("analyze", "--catalog", server.ready["tiled"], "--subject", "M07", "--workers", "1", "--out",
            str(tmp_path))
    first = server.cli(*args, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 tomograms of 1 subjects" in first.stdout  # days 14 and 15 of the scans above
    assert "linked 3 analysis runs" in first.stdout  # two tomograms and their interval

    catalog = server.catalog()
    studied = catalog.search(Key("start.analysis") == "study_tomogram")
    assert sorted(run.metadata["start"]["raw_plan_name"] for run in studied.values()) == ["fly_tomo", "fly_tomo"]
    for run in studied.values():
        start = run.metadata["start"]
        raw = catalog[start["raw_run_uid"]].metadata["start"]
        assert raw["subject"]["subject_id"] == "M07" and start["subject"] == raw["subject"]
        result = json.loads(Path(start["result_file"]).read_text())
        assert run["measures"]["bv_tv"].read()[0] == pytest.approx(result["measures"]["bv_tv"])
        assert Path(start["outputs"]["labels"]).is_file() and start["provenance"]["worker"].startswith("tcp://")
    (interval,) = catalog.search(Key("start.analysis") == "study_interval").values()
    assert interval.metadata["start"]["subject"]["day"] == 15
    assert interval.metadata["start"]["baseline_run_uid"] in catalog

    again = server.cli(*args, timeout=600)  # done before: skipped, and not linked twice
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ran 0, skipped 3" in again.stdout and "linked 0 analysis runs" in again.stdout
    assert len(catalog.search(Key("start.analysis") == "study_tomogram")) == 2


def test_the_server_stops_every_part_and_frees_every_port(server):
    parts = psutil.Process(server.proc.pid).children(recursive=True)
    assert server.stop() == 0
    for part in parts:
        assert not part.is_running() or part.status() == psutil.STATUS_ZOMBIE, part
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN"}
    assert not listening & set(server.ports), listening & set(server.ports)


def test_a_queue_command_without_a_server_names_the_address(tmp_path):
    config = tmp_path / "nobody.toml"
    config.write_text(overrides_toml({"server": {"control_port": free_ports(1)[0]}}))
    result = subprocess.run([sys.executable, "-m", "nanoscope_daq", "queue", "status", "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "no instrument server answers at tcp://127.0.0.1:" in result.stderr
    assert "is `nanoscope serve` running" in result.stderr and "Traceback" not in result.stderr


def test_a_refusal_of_the_server_carries_the_fix():
    from nanoscope_daq.server.queue_client import refusal

    text = refusal("Request failed: Failed to add an item: Plan validation failed: Plan 'count' is not in the list "
                   "of allowed plans.\nPlan: {'item_type': 'plan', 'name': 'count', 'args': [['xrm']]}")
    assert "'count' is not in the list of allowed plans" in text and "Plan: {" not in text
    assert text.endswith("the queue runs the instrument's plans only: `nanoscope queue add --help` lists them")
