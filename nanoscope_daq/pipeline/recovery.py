"""Recovery of a run whose scan process died: its NXtomo files, from its journal and its camera files.

The journal (:mod:`.journal`) holds the run's documents up to the process's death. The
camera file holds every frame the camera wrote, which may be more than the documents
announced: the camera keeps writing until the instrument's dead man's switch stops it.
:func:`recover_run` announces those trailing frames from the camera file's own per-frame
attributes (``FrameType`` says which are darks, flats and projections; the angles and
source current the NXtomo writer reads from the file as always), closes the run with a
stop document if it has none, and replays everything into the :class:`NXtomoWriter`.
Each file written says that it was recovered and why.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..documents import IMAGE_DATA_KEY, STREAM_OF_KEY, ImageKey
from .announcements import Announcements, CameraFile, path_from_uri
from .journal import JournalError, read_journal
from .nxtomo_writer import NXtomoWriter, nxtomo_path
from .open_files import clear_open_mark


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover_run` did."""

    written: list[Path]
    """The NXtomo files written."""
    frames_added: int
    """Frames found in the camera files after the run's last announcement, added to the NXtomo files."""
    repaired: list[Path]
    """Camera files cleared of the open mark of a dead writer."""
    reason: str
    """Why the files needed recovering (recorded in each)."""


def recover_run(journal_path: Path, out: Path | None = None) -> Recovery:
    """Write the NXtomo files of the run journalled at ``journal_path``.

    Parameters
    ----------
    journal_path
        The run's ``<run uid>.jsonl`` (``paths.journal_dir``).
    out
        ``OUT.nxs``: write there (``OUT_<tomogram:03d>.nxs`` when the run has several
        tomograms). Default: next to the camera file, as the scan would have.

    Raises
    ------
    JournalError
        The journal is missing or garbled, names no camera file, or a camera file is gone.
    """
    file_path = _file_path(out) if out is not None else nxtomo_path
    journal = read_journal(journal_path)
    start = journal.named("start")[0]
    announcements = Announcements()
    for name, doc in journal.documents:
        if name in ("descriptor", "stream_resource", "stream_datum"):
            getattr(announcements, name)(doc)
    if not announcements.files:
        raise JournalError(f"run {start['uid']} announced no camera file before its journal {journal.path} ends: "
                           "no frame of it was announced, so there is nothing to recover; run the scan again")
    repaired = []
    added: list[tuple[str, dict]] = []
    frames_added = 0
    for camera in announcements.files.values():
        if not camera.path.is_file():
            raise JournalError(f"camera file {camera.path} of run {start['uid']} is gone; restore it to that path "
                               "(the NXtomo files point at its frames), then run `nanoscope recover` again")
        if clear_open_mark(camera.path):
            repaired.append(camera.path)
        documents, count = _trailing_frames(journal.documents, start, camera)
        added.extend(documents)
        frames_added += count

    reasons = []
    stops = journal.named("stop")
    if stops:
        stop = dict(stops[-1])
        if frames_added and stop.get("exit_status") == "success":
            stop["exit_status"] = "fail"  # the documents missed frames: the run did not record all it took
    else:
        stop = {"uid": str(uuid.uuid4()), "run_start": start["uid"], "time": time.time(), "exit_status": "fail",
                "reason": "the scan process died before the run's stop document", "num_events": {}}
        reasons.append("the run has no stop document (its scan process died)")
    if frames_added:
        reasons.append(f"{frames_added} frames the camera wrote after the run's last announcement were added from the "
                       "camera file's per-frame attributes")
    if repaired:
        reasons.append(f"camera file(s) {', '.join(p.name for p in repaired)} left open by a dead writer, repaired")
    if journal.cut_short:
        reasons.append("the journal's last document was cut short")
    reason = "; ".join(reasons or ["replayed from the run's journal"]) + f" (journal {journal.path.name})"

    writer = NXtomoWriter(file_path=file_path, recovery=reason)
    for name, doc in journal.documents:
        if name != "stop":
            writer(name, doc)
    for name, doc in added:
        writer(name, doc)
    writer("stop", stop)
    written = list(writer.written)
    if out is not None and len(written) == 1:
        os.replace(written[0], out)  # same directory: the relative links to the camera file still hold
        written = [out]
    return Recovery(written, frames_added, repaired, reason)


def _file_path(out: Path) -> Callable[[Path, int], Path]:
    """Where tomogram k goes with ``-o OUT.nxs``: ``OUT_<k:03d>.nxs`` (renamed to OUT.nxs when it is the only one)."""
    if out.suffix != ".nxs" or not out.parent.is_dir():
        raise JournalError(f"output {out} must be a .nxs file in an existing directory; e.g. -o recovered.nxs")

    def path(camera_file: Path, tomogram: int) -> Path:
        return out.with_name(f"{out.stem}_{tomogram:03d}.nxs")

    return path


def _trailing_frames(documents: list[tuple[str, dict]], start: dict, camera: CameraFile) -> tuple[list, int]:
    """Documents announcing the frames of ``camera`` after its last announced frame, and how many."""
    announced = max((block.stop for stream in camera.streams.values() for block in stream), default=0)
    with h5py.File(camera.path, "r") as h5:
        lengths = [h5[camera.dataset(key)].shape[0] for key in camera.datasets]
        held = min(lengths)
        frame_type = (np.asarray(h5[camera.dataset("frame_type")][announced:held], dtype=float)
                      if "frame_type" in camera.datasets and held > announced else np.array([]))
    if held <= announced:
        return [], 0
    kinds = _streams_of(frame_type, held - announced)
    resource = next((doc["uid"] for name, doc in documents if name == "stream_resource"
                     and doc["data_key"] == IMAGE_DATA_KEY and path_from_uri(doc["uri"]) == camera.path), None)
    if resource is None:
        raise JournalError(f"the run never announced the pixels ({IMAGE_DATA_KEY!r}) of camera file {camera.path}; "
                           "its journal is not a scan's, or was edited: pass the journal the scan wrote")
    descriptors = {doc["name"]: doc["uid"] for name, doc in documents if name == "descriptor"}
    added: list[tuple[str, dict]] = []
    changes = np.flatnonzero(np.diff(kinds)) + 1
    for block in np.split(np.arange(len(kinds)), changes):
        stream = STREAM_OF_KEY[ImageKey(int(kinds[block[0]]))]
        if stream not in descriptors:
            descriptors[stream] = str(uuid.uuid4())
            added.append(("descriptor", {"uid": descriptors[stream], "run_start": start["uid"], "name": stream,
                                         "time": time.time(), "data_keys": {}, "configuration": {}, "hints": {},
                                         "object_keys": {}}))
        first = announced + int(block[0])
        added.append(("stream_datum", {
            "uid": f"{resource}/recovered-{first}", "stream_resource": resource, "descriptor": descriptors[stream],
            "indices": {"start": first, "stop": first + len(block)}, "seq_nums": {"start": 0, "stop": 0},
        }))
    return added, held - announced


def _streams_of(frame_type: np.ndarray, count: int) -> np.ndarray:
    """The image key each trailing frame was taken as: its recorded ``FrameType``, else a projection.

    A frame whose type is missing or unknown is announced as a projection; the NXtomo
    writer then judges it by the beam and the angle grid like every other frame.
    """
    kinds = np.full(count, int(ImageKey.PROJECTION))
    known = np.isin(frame_type, [int(key) for key in STREAM_OF_KEY]) if len(frame_type) else np.zeros(count, bool)
    kinds[known] = frame_type[known].astype(int)
    return kinds
