"""The document journal and ``nanoscope recover``: every frame of a camera file ends up in an NXtomo file.

Scans run against the simulator; the journal is the one the scan wrote, cut where a
dying process would cut it; the camera files are the camera IOC's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import wait_until

from nanoscope_daq.cli import main
from nanoscope_daq.documents import ATTRIBUTE_GROUP, ImageKey
from nanoscope_daq.pipeline.journal import DocumentJournal, JournalError, read_journal
from nanoscope_daq.pipeline.open_files import clear_open_mark, is_marked_open
from nanoscope_daq.pipeline.recovery import recover_run
from nanoscope_daq.plans import fly_tomo


def _nxtomo(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        detector = h5["entry/instrument/detector"]
        return {
            "sequence_number": detector["sequence_number"][()].astype(np.int64),
            "image_key": detector["image_key"][()],
            "rotation_angle": h5["entry/sample/rotation_angle"][()],
            "frames": np.asarray(detector["data"][[0, -1]]),
            "recovered": h5["entry"].attrs.get("recovered", False),
            "reason": h5["entry"].attrs.get("recovery_reason", ""),
            "complete": h5["entry"].attrs["experiment_complete"],
        }


def _camera(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {"count": h5["entry/data/data"].shape[0],
                "frame_type": h5[ATTRIBUTE_GROUP + "FrameType"][()],
                "rotation_angle": h5[ATTRIBUTE_GROUP + "RotationAngle"][()],
                "first_last": np.asarray(h5["entry/data/data"][[0, -1]])}


def _assert_every_frame_recovered(camera_path: Path, nxtomo_paths: list[Path]) -> None:
    """Every frame of the camera file in exactly one NXtomo, with its own angle and a key its type allows."""
    camera = _camera(camera_path)
    files = [_nxtomo(path) for path in nxtomo_paths]
    sequence = np.concatenate([f["sequence_number"] for f in files])
    assert sorted(sequence.tolist()) == list(range(camera["count"]))
    for f in files:
        taken_as = camera["frame_type"][f["sequence_number"]]
        valid = f["image_key"] != ImageKey.INVALID
        assert np.array_equal(f["image_key"][valid], taken_as[valid])
        assert np.array_equal(f["rotation_angle"], camera["rotation_angle"][f["sequence_number"]])
        assert (f["image_key"] == ImageKey.PROJECTION).sum() > 0
        assert f["recovered"] and f["reason"]


@pytest.fixture(scope="module")
def journalled_scan(scan_bench, tmp_path_factory):
    """A fly scan run with the journal subscribed: (journal path, camera file, the live writer's files)."""
    journal = DocumentJournal(tmp_path_factory.mktemp("journal"))
    token = scan_bench.RE.subscribe(journal)
    try:
        scan_bench.run(fly_tomo(scan_bench.xrm, projections=60, exposure_s=0.004, config=scan_bench.config))
    finally:
        scan_bench.RE.unsubscribe(token)
    written = list(scan_bench.nxtomo.written[-1:])
    camera = Path(scan_bench.named("stream_resource")[0]["uri"].removeprefix("file://localhost"))
    return journal.path, camera, written


def test_the_journal_holds_every_document_as_emitted(scan_bench, journalled_scan):
    path, _, _ = journalled_scan
    journal = read_journal(path)
    assert path.name == f"{journal.named('start')[0]['uid']}.jsonl" and not journal.cut_short
    assert [name for name, _ in journal.documents] == [name for name, _ in scan_bench.docs]
    assert journal.named("stop")[0]["exit_status"] == "success"


def test_recover_of_a_finished_run_writes_what_the_scan_wrote(journalled_scan, tmp_path):
    path, camera, (live,) = journalled_scan
    recovery = recover_run(path, tmp_path / "again.nxs")
    assert recovery.written == [tmp_path / "again.nxs"] and recovery.frames_added == 0
    again, original = _nxtomo(tmp_path / "again.nxs"), _nxtomo(live)
    for key in ("sequence_number", "image_key", "rotation_angle", "frames"):
        assert np.array_equal(again[key], original[key]), key
    assert again["recovered"] and "replayed from the run's journal" in again["reason"] and not original["recovered"]


def test_recover_adds_the_frames_a_dying_process_never_announced(journalled_scan, tmp_path):
    """The journal cut before the flats after, the tomograms event and the stop, mid-document."""
    path, camera, _ = journalled_scan
    lines = path.read_text().splitlines()
    documents = [json.loads(line) for line in lines]
    projection_descriptors = {d["doc"]["uid"] for d in documents
                              if d["name"] == "descriptor" and d["doc"]["name"] == "projections"}
    pixels = {d["doc"]["uid"] for d in documents if d["name"] == "stream_resource" and d["doc"]["data_key"] == "image"}
    announced = [(i, d["doc"]) for i, d in enumerate(documents)
                 if d["name"] == "stream_datum" and d["doc"]["stream_resource"] in pixels]
    last_start = max(doc["indices"]["start"] for _, doc in announced if doc["descriptor"] in projection_descriptors)
    # the last projections' announcement and every later one (the flats after may be announced before it)
    cut_at = min(i for i, doc in announced if doc["indices"]["start"] >= last_start)
    cut = tmp_path / path.name
    cut.write_text("\n".join(lines[:cut_at]) + "\n" + lines[cut_at][:40])

    recovery = recover_run(cut)
    assert recovery.frames_added == _camera(camera)["count"] - last_start >= 4 + 1  # projections, the 4 flats after
    assert len(recovery.written) == 1 and "no stop document" in recovery.reason and "cut short" in recovery.reason
    _assert_every_frame_recovered(camera, recovery.written)
    recovered = _nxtomo(recovery.written[0])
    assert not recovered["complete"]
    assert (recovered["image_key"][-4:] == ImageKey.FLAT).all()  # the flats after, from FrameType


def test_the_command_line_recovers_and_refuses_in_one_line(journalled_scan, tmp_path, capsys):
    path, camera, _ = journalled_scan
    assert main(["recover", str(path), "-o", str(tmp_path / "r.nxs")]) == 0
    out = capsys.readouterr().out
    assert f"NXtomo file: {tmp_path / 'r.nxs'}" in out and "recovered: replayed" in out

    garbled = tmp_path / "garbled.jsonl"
    lines = path.read_text().splitlines()
    garbled.write_text("\n".join([lines[0], "{not json", *lines[1:]]))
    refusals = {
        (str(tmp_path / "none.jsonl"),): ("does not exist", "journal_dir"),
        (str(garbled),): ("line 2 is not", "unedited journal"),
        (str(path), "-o", str(tmp_path / "r.h5")): ("must be a .nxs file", "-o recovered.nxs"),
    }
    for argv, words in refusals.items():
        assert main(["recover", *argv]) == 2
        err = capsys.readouterr().err
        assert all(word in err for word in words) and len(err.strip().splitlines()) == 1, err


def test_a_journal_whose_camera_file_is_gone_is_refused(journalled_scan, tmp_path):
    path, camera, _ = journalled_scan
    moved = tmp_path / camera.name
    os.replace(camera, moved)
    try:
        with pytest.raises(JournalError, match="is gone; restore it to that path"):
            recover_run(path)
    finally:
        os.replace(moved, camera)


WRITER = """
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w", libver="latest") as h5:
    data = h5.create_dataset("entry/data/data", shape=(0, 4, 5), maxshape=(None, 4, 5), dtype="u2", chunks=(1, 4, 5))
    h5.attrs["camera"] = "sim"
    h5.swmr_mode = True
    data.resize((3, 4, 5))
    data[:] = np.arange(60, dtype="u2").reshape(3, 4, 5)
    h5.flush()
    print("flushed", flush=True)
    sys.stdin.readline()  # killed here, the file still open
"""


def test_a_file_left_open_by_a_killed_writer_is_repaired(tmp_path):
    path = tmp_path / "camera.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "flushed"
    writer.kill()
    writer.wait(10)
    assert is_marked_open(path)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    assert clear_open_mark(path)
    with h5py.File(path, "r") as h5:  # no SWMR needed any more
        assert np.array_equal(h5["entry/data/data"][()], np.arange(60).reshape(3, 4, 5))
        assert h5.attrs["camera"] == "sim"
    assert not is_marked_open(path) and not clear_open_mark(path)


@pytest.mark.slow
def test_a_killed_scan_is_recovered_with_every_frame_and_reconstructs(fresh_scan_bench, tmp_path):
    """SIGKILL mid fly scan; the dead man's switch stops the camera; recover; recon reconstructs the result.

    The kill comes past half the projections: the stage keeps turning and the PSO keeps
    triggering until the lapse, so the camera file holds the whole range, hundreds of
    frames of it never announced, and FDK gets the angles it needs.
    """
    bench, xrm = fresh_scan_bench, fresh_scan_bench.xrm
    sim, pso, source, hdf = bench.sim, xrm.rot.pso, xrm.source, xrm.det.hdf1
    command = [sys.executable, "-m", "nanoscope_daq", "scan", "fly_tomo", "--prefix", sim.prefix,
               "--port", str(sim.port), "--config", str(bench.config_path), "--projections", "900",
               "--velocity", "40", "--exposure-s", "0.004"]
    log = tmp_path / "scan.log"
    with log.open("w") as output:
        client = subprocess.Popen(command, stdout=output, stderr=output, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: pso.status.get() == "Armed" and source.shutter.status.get() == "Open",
                   timeout=120, what="the fly scan under way")
        wait_until(lambda: hdf.num_captured.get(use_monitor=False) > 500, timeout=60, what="half the projections")
        os.kill(client.pid, signal.SIGKILL)
        client.wait(10)
        wait_until(lambda: hdf.capture.get(as_string=True, use_monitor=False) == "Done"
                   and xrm.wd.owner.get(use_monitor=False) == "", timeout=float(xrm.wd.timeout.get()) + 10,
                   what="the watchdog's lapse")
    finally:
        client.kill()
    journal = Path(next(line.split()[1] for line in log.read_text().splitlines() if line.startswith("journal: ")))
    camera = Path(hdf.full_file_name.get(use_monitor=False))
    assert journal.parent == bench.config.paths.journal_path

    run = subprocess.run([sys.executable, "-m", "nanoscope_daq", "recover", str(journal)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    written = [Path(line.removeprefix("NXtomo file: ")) for line in run.stdout.splitlines()
               if line.startswith("NXtomo file: ")]
    assert written == [camera.with_name(f"{camera.stem}_000.nxs")]
    _assert_every_frame_recovered(camera, written)
    assert "no stop document" in run.stdout and "after the run's last announcement" in run.stdout

    volume = tmp_path / "volume.h5"
    recon = subprocess.run([sys.executable, "-m", "nanoscope_daq", "recon", str(written[0]), "-o", str(volume),
                            "--config", str(bench.config_path)], capture_output=True, text=True, timeout=300)
    assert recon.returncode == 0, recon.stderr[-2000:]
    with h5py.File(volume, "r") as h5:
        assert h5["volume"].ndim == 3 and np.isfinite(h5["volume"][()]).all()
