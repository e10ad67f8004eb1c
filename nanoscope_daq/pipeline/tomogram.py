"""One tomogram of a run: which camera frames it is made of, and its planned angle grid.

A finished tomogram comes from its ``tomograms`` event (docs/documents.md). A run that
did not end in success may also leave an unfinished one: the projections announced
after the last finished tomogram, with the darks and flats taken last before them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..documents import STREAM_OF_KEY, DocumentContractError, ImageKey
from .announcements import CameraFile, normalized
from .frame_ranges import FrameRange

EVENT_KEYS = (
    "tomogram",
    "time_point",
    "file",
    "projections_start",
    "projections_stop",
    "darks_start",
    "darks_stop",
    "flats_before_start",
    "flats_before_stop",
    "flats_after_start",
    "flats_after_stop",
    "grid_start_deg",
    "grid_step_deg",
    "grid_count",
    "start_time",
    "end_time",
)
"""Keys a ``tomograms`` event must carry (``force_n`` is optional: NaN unless a load step)."""


@dataclass(frozen=True)
class Grid:
    """The planned angles ``start_deg + i * step_deg``, ``i < count``."""

    start_deg: float
    step_deg: float
    count: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_deg) and math.isfinite(self.step_deg) and self.step_deg != 0):
            raise ValueError(f"angle grid start {self.start_deg} step {self.step_deg} needs a finite, nonzero step")
        if self.count < 1:
            raise ValueError(f"angle grid count {self.count} must be at least 1")

    def indices(self, angles_deg: np.ndarray) -> np.ndarray:
        """Grid index nearest each angle (may fall outside ``[0, count)``)."""
        return np.rint((np.asarray(angles_deg, dtype=float) - self.start_deg) / self.step_deg).astype(np.int64)


@dataclass(frozen=True)
class Tomogram:
    """The frames of one tomogram, as ``(image key, range)`` parts in acquisition order."""

    index: int
    time_point: int
    camera_file: Path
    parts: tuple[tuple[ImageKey, FrameRange], ...]
    grid: Grid
    complete: bool = True
    start_time: float | None = None
    """POSIX time of the first projection; None: take it from the frames."""
    end_time: float | None = None
    force_n: float = math.nan

    @classmethod
    def from_event(cls, data: Mapping[str, Any]) -> Tomogram:
        """The tomogram a ``tomograms`` event announces (its ``data``); checks the event's shape."""
        missing = [key for key in EVENT_KEYS if key not in data]
        if missing:
            message = f"a tomograms event lacks the keys {missing} that docs/documents.md requires"
            prefixed = sorted(name for name in data for key in missing if name.endswith("_" + key))
            if prefixed:
                message += (
                    f"; it has {prefixed} instead: ophyd prefixes a Device's component names with the device "
                    "name, so read Signals named exactly as the contract's keys"
                )
            raise DocumentContractError(message)
        index = int(data["tomogram"])

        def frames(name: str) -> FrameRange:
            start, stop = int(data[f"{name}_start"]), int(data[f"{name}_stop"])
            if (start, stop) == (-1, -1):
                return FrameRange(0, 0)
            try:
                return FrameRange(start, stop)
            except ValueError as exc:
                raise DocumentContractError(f"tomogram {index}: {name} {exc}; use -1, -1 for none") from None

        try:
            grid = Grid(float(data["grid_start_deg"]), float(data["grid_step_deg"]), int(data["grid_count"]))
        except ValueError as exc:
            raise DocumentContractError(f"tomogram {index}: {exc}") from None
        projections = frames("projections")
        if not len(projections):
            raise DocumentContractError(f"tomogram {index} announces no projections ({projections})")
        parts = [
            (ImageKey.DARK, frames("darks")),
            (ImageKey.FLAT, frames("flats_before")),
            (ImageKey.PROJECTION, projections),
            (ImageKey.FLAT, frames("flats_after")),
        ]
        return cls(
            index=index,
            time_point=int(data["time_point"]),
            camera_file=normalized(Path(data["file"])),
            parts=_in_acquisition_order(index, parts),
            grid=grid,
            start_time=float(data["start_time"]),
            end_time=float(data["end_time"]),
            force_n=float(data.get("force_n", math.nan)),
        )

    def frame_indices(self) -> np.ndarray:
        """Camera-file index of each frame, in acquisition order."""
        return np.concatenate([frames.indices() for _, frames in self.parts])

    def nominal_keys(self) -> np.ndarray:
        """The image key each frame was taken as (before validity checks)."""
        return np.concatenate([np.full(len(frames), key, dtype=np.int8) for key, frames in self.parts])

    def resolved(self, camera: CameraFile) -> Tomogram:
        """The tomogram with each frame under the stream that announced it; raises if one was never announced.

        Flats re-taken in the middle of a tomogram (after an interlock trip or alarm) lie
        inside its projection range; they become intermediate flats (image key 1), as
        nabu reads them.
        """
        parts: list[tuple[ImageKey, FrameRange]] = []
        for key, frames in self.parts:
            if key != ImageKey.PROJECTION:
                self._require(camera, key, frames)
                parts.append((key, frames))
                continue
            inside = [
                (other, FrameRange(max(block.start, frames.start), min(block.stop, frames.stop)))
                for other in (ImageKey.PROJECTION, ImageKey.FLAT)
                for block in camera.announced(STREAM_OF_KEY[other])
                if block.start < frames.stop and block.stop > frames.start
            ]
            if sum(len(part) for _, part in inside) != len(frames):
                self._require(camera, key, frames)
            parts.extend(inside)
        return dataclasses.replace(self, parts=_in_acquisition_order(self.index, parts))

    def _require(self, camera: CameraFile, key: ImageKey, frames: FrameRange) -> None:
        stream = STREAM_OF_KEY[key]
        announced = camera.announced(stream)
        if not announced.covers(frames):
            raise DocumentContractError(
                f"tomogram {self.index} refers to frames {frames} of {camera.path} as {stream}, but the "
                f"{stream!r} stream announced only {announced}; announce every frame with a stream_datum "
                "before the run stops"
            )


def _in_acquisition_order(index: int, parts: list[tuple[ImageKey, FrameRange]]) -> tuple:
    ordered = sorted(((key, frames) for key, frames in parts if len(frames)), key=lambda part: part[1].start)
    for (_, before), (_, after) in zip(ordered, ordered[1:]):
        if after.start < before.stop:
            raise DocumentContractError(f"tomogram {index}: frame ranges {before} and {after} overlap")
    return tuple(ordered)


def unfinished_parts(camera: CameraFile, finished: Sequence[Tomogram]) -> tuple[tuple[ImageKey, FrameRange], ...]:
    """The parts of the tomogram a run left unfinished in ``camera``: empty if none.

    Its projections are those announced after the last finished projection; its darks
    and flats before are the latest announced before them, its flats after any
    announced after them.
    """
    finished_projections = [
        frames for t in finished if t.camera_file == camera.path for key, frames in t.parts
        if key == ImageKey.PROJECTION
    ]
    done = max((frames.stop for frames in finished_projections), default=0)
    projections = [
        FrameRange(max(block.start, done), block.stop)
        for block in camera.announced("projections")
        if block.stop > done
    ]
    if not projections:
        return ()
    first, last = projections[0].start, projections[-1].stop
    darks = [b for b in camera.announced("darks") if b.stop <= first][-1:]
    flats_before = [b for b in camera.announced("flats") if b.stop <= first][-1:]
    flats_after = [b for b in camera.announced("flats") if b.start >= last][:1]
    parts = (
        [(ImageKey.DARK, b) for b in darks]
        + [(ImageKey.FLAT, b) for b in flats_before]
        + [(ImageKey.PROJECTION, b) for b in projections]
        + [(ImageKey.FLAT, b) for b in flats_after]
    )
    return tuple(sorted(parts, key=lambda part: part[1].start))


def unfinished_grid(scan: Mapping[str, Any], previous: Grid | None, first_angle_deg: float) -> Grid:
    """The planned grid of an unfinished tomogram.

    Step and count are those of the run's previous tomogram, else ``range_deg /
    projections`` and ``projections`` of the start document's ``scan``; the start is
    ``scan.start_deg`` plus the whole number of grid spans nearest the first angle
    (a series that keeps rotating starts each tomogram one span further).
    """
    try:
        start = float(scan["start_deg"])
        if previous is not None:
            step, count = previous.step_deg, previous.count
        else:
            count = int(scan["projections"])
            step = float(scan["range_deg"]) / count
        span = step * count
        if math.isfinite(first_angle_deg):
            start += round((first_angle_deg - start) / span) * span
        return Grid(start, step, count)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise DocumentContractError(
            "cannot place the unfinished tomogram's angles: the start document's 'scan' needs start_deg, "
            f"range_deg and projections > 0 ({exc!r})"
        ) from None
