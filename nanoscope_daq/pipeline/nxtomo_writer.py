"""The NXtomo writer: a bluesky callback that turns each tomogram of a run into an ``.nxs`` file.

Subscribe it to the RunEngine (``RE.subscribe(NXtomoWriter())``) or feed it stored
documents. It follows docs/documents.md: frames announced by stream_resource /
stream_datum in the darks, flats and projections streams, one ``tomograms`` event per
tomogram. When the run stops (the camera file is closed by then) it writes
``<camera file stem>_<tomogram:03d>.nxs`` next to the camera file for each tomogram;
a run that did not succeed also gets a file for the tomogram it cut short, marked
incomplete. Pixels are never copied: the files hold virtual datasets of the camera file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from event_model import DocumentRouter

from ..documents import TOMOGRAMS_STREAM, DocumentContractError, ImageKey
from .announcements import Announcements
from .camera_file import read_camera_frames
from .image_keys import classify_frames
from .nxtomo_layout import RunRecord, write_nxtomo
from .tomogram import Tomogram, unfinished_grid, unfinished_parts

logger = logging.getLogger(__name__)


def nxtomo_path(camera_file: Path, tomogram: int) -> Path:
    """Where the NXtomo file of ``tomogram`` goes: next to its camera file."""
    return camera_file.with_name(f"{camera_file.stem}_{tomogram:03d}.nxs")


@dataclass
class _Run:
    start: dict[str, Any]
    announcements: Announcements = field(default_factory=Announcements)
    tomograms: list[Tomogram] = field(default_factory=list)
    errors: list[tuple[str, Exception]] = field(default_factory=list)

    def attempt(self, what: str, action: Callable[[], None]) -> None:
        """Run ``action``; a contract or file error is logged and kept for the stop, not raised now."""
        try:
            action()
        except (DocumentContractError, OSError) as exc:
            logger.error("NXtomo writer: %s: %s", what, exc)
            self.errors.append((what, exc))


class NXtomoWriter(DocumentRouter):
    """Writes one NXtomo file per tomogram when a run stops; ``written`` lists every file written.

    ``on_file_written(path)`` is called after each file is complete (the CLI prints it).
    ``file_path(camera file, tomogram index)`` names each file (default :func:`nxtomo_path`);
    ``recovery`` says why a replay by ``nanoscope recover`` writes the files (recorded in them).
    A document that breaks the contract never interrupts the scan (the camera file keeps
    every frame, and a replay can write the files again): the problem is logged at once,
    every tomogram that can be written is written at the stop, and then the stop raises
    :class:`DocumentContractError` naming every problem (OSError if a camera file could
    not be read).
    """

    def __init__(self, on_file_written: Callable[[Path], None] | None = None, *,
                 file_path: Callable[[Path, int], Path] = nxtomo_path, recovery: str = "") -> None:
        super().__init__()
        self.on_file_written = on_file_written
        self.file_path = file_path
        self.recovery = recovery
        self.written: list[Path] = []
        self._run: _Run | None = None

    def start(self, doc):
        if self._run is not None:
            logger.error("NXtomo writer: run %s never stopped; its tomograms are not written", self._run.start["uid"])
        self._run = _Run(start=dict(doc))

    def descriptor(self, doc):
        run = self._current("descriptor")
        run.attempt(f"descriptor {doc.get('name')!r}", lambda: run.announcements.descriptor(doc))

    def stream_resource(self, doc):
        run = self._current("stream_resource")
        run.attempt("stream_resource", lambda: run.announcements.stream_resource(doc))

    def stream_datum(self, doc):
        run = self._current("stream_datum")
        run.attempt("stream_datum", lambda: run.announcements.stream_datum(doc))

    def event(self, doc):
        run = self._current("event")
        run.attempt("event", lambda: self._event(run, doc))

    def stop(self, doc):
        run = self._current("stop")
        self._run = None
        record = RunRecord(run.start, doc.get("exit_status", "unknown"), doc.get("reason") or "", self.recovery)
        for tomogram in run.tomograms:
            run.attempt(f"tomogram {tomogram.index}", lambda t=tomogram: self._write(run, t, record))
        if record.exit_status != "success":
            run.attempt("the unfinished tomogram", lambda: self._write_unfinished(run, record))
        if run.errors:
            message = f"NXtomo writer, run {run.start['uid']}:\n" + "\n".join(
                f"{what}: {exc}" for what, exc in run.errors
            )
            if all(isinstance(exc, DocumentContractError) for _, exc in run.errors):
                raise DocumentContractError(message)
            raise OSError(message)

    def _current(self, name: str) -> _Run:
        if self._run is None:
            raise DocumentContractError(
                f"NXtomoWriter received a {name} document outside a run; subscribe it before the run starts"
            )
        return self._run

    @staticmethod
    def _event(run: _Run, doc: dict) -> None:
        if run.announcements.stream_name(doc["descriptor"]) == TOMOGRAMS_STREAM:
            run.tomograms.append(Tomogram.from_event(doc["data"]))

    def _write(self, run: _Run, tomogram: Tomogram, record: RunRecord) -> None:
        camera = run.announcements.camera(tomogram.camera_file)
        tomogram = tomogram.resolved(camera)
        frames = read_camera_frames(camera, tomogram.frame_indices())
        classification = classify_frames(
            tomogram.nominal_keys(),
            source_current=frames.values["source_current"],
            rotation_angle=frames.values["rotation_angle"],
            encoder_angle=frames.value("encoder_angle"),
            frame_type=frames.value("frame_type"),
            grid=tomogram.grid,
        )
        path = self.file_path(camera.path, tomogram.index)
        write_nxtomo(path, tomogram, frames, classification, record)
        self.written.append(path)
        logger.info("NXtomo writer: wrote %s", path)
        if self.on_file_written is not None:
            self.on_file_written(path)

    def _write_unfinished(self, run: _Run, record: RunRecord) -> None:
        """Write the tomogram the run cut short, if it has projections."""
        file = run.announcements.last_projections_file
        if file is None:
            return
        camera = run.announcements.camera(file)
        parts = unfinished_parts(camera, run.tomograms)
        if not parts:
            return
        first_projection = next(frames.start for key, frames in parts if key == ImageKey.PROJECTION)
        first_angle = read_camera_frames(camera, np.array([first_projection])).values["rotation_angle"][0]
        previous = run.tomograms[-1] if run.tomograms else None
        tomogram = Tomogram(
            index=previous.index + 1 if previous else 0,
            time_point=previous.time_point + 1 if previous else 0,
            camera_file=file,
            parts=parts,
            grid=unfinished_grid(run.start.get("scan") or {}, previous.grid if previous else None, first_angle),
            complete=False,
        )
        self._write(run, tomogram, record)
