"""What a run's descriptor, stream_resource and stream_datum documents announced, per camera file.

docs/documents.md: each frame stream (darks, flats, projections) has external data keys,
one stream_resource per data key and camera file (``parameters.dataset`` says where in
the file), and stream_datum documents whose ``indices`` are frame indices in that file.
A stream_resource may serve several streams: the stream of a stream_datum is the name
of its descriptor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..documents import FRAME_STREAMS, HDF5_MIMETYPE, IMAGE_DATA_KEY, DocumentContractError
from .frame_ranges import FrameRange, FrameSet


def path_from_uri(uri: str) -> Path:
    """The absolute local path of a ``file://localhost/...`` (or ``file:///...``) URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
        raise DocumentContractError(
            f"stream_resource uri {uri!r} is not a local file URI; documents.md wants "
            "'file://localhost<absolute path>'"
        )
    return normalized(Path(unquote(parsed.path)))


def normalized(path: Path) -> Path:
    """``path`` without ``.`` and ``..`` parts, so that two spellings of one file compare equal."""
    return Path(os.path.normpath(path))


@dataclass
class CameraFile:
    """One camera file: the dataset of each data key and the frames each stream announced."""

    path: Path
    datasets: dict[str, str] = field(default_factory=dict)
    streams: dict[str, FrameSet] = field(default_factory=dict)

    def announced(self, stream: str) -> FrameSet:
        return self.streams.get(stream) or FrameSet()

    def dataset(self, data_key: str) -> str:
        try:
            return self.datasets[data_key]
        except KeyError:
            raise DocumentContractError(
                f"no stream_resource for data key {data_key!r} of camera file {self.path}; the frame streams "
                f"must declare it as an external data key (announced: {sorted(self.datasets) or 'none'})"
            ) from None


class Announcements:
    """Collects the camera files and announced frames of one run from its documents."""

    def __init__(self) -> None:
        self.files: dict[Path, CameraFile] = {}
        self.last_projections_file: Path | None = None
        """The camera file of the latest projections announced."""
        self._stream_names: dict[str, str] = {}
        self._resources: dict[str, tuple[CameraFile, str]] = {}

    def descriptor(self, doc: Mapping[str, Any]) -> None:
        self._stream_names[doc["uid"]] = doc["name"]

    def stream_name(self, descriptor_uid: str) -> str:
        try:
            return self._stream_names[descriptor_uid]
        except KeyError:
            raise DocumentContractError(
                f"a document refers to descriptor {descriptor_uid!r}, which this run never emitted; "
                "every event and stream_datum must follow its descriptor"
            ) from None

    def stream_resource(self, doc: Mapping[str, Any]) -> None:
        if doc.get("mimetype") != HDF5_MIMETYPE:
            raise DocumentContractError(
                f"stream_resource {doc['uid']} (data key {doc.get('data_key')!r}) has mimetype "
                f"{doc.get('mimetype')!r}; camera files are announced as {HDF5_MIMETYPE!r}"
            )
        dataset = (doc.get("parameters") or {}).get("dataset")
        if not dataset:
            raise DocumentContractError(
                f"stream_resource {doc['uid']} (data key {doc.get('data_key')!r}) has no parameters.dataset; "
                "it must name the dataset of the data key in the camera file"
            )
        path = path_from_uri(doc["uri"])
        camera = self.files.setdefault(path, CameraFile(path))
        key = doc["data_key"]
        known = camera.datasets.setdefault(key, dataset)
        if known != dataset:
            raise DocumentContractError(
                f"data key {key!r} of {path} was announced in dataset {known!r} and again in {dataset!r}; "
                "one data key lives in one dataset of the camera file"
            )
        self._resources[doc["uid"]] = (camera, key)

    def stream_datum(self, doc: Mapping[str, Any]) -> tuple[str, CameraFile, FrameRange] | None:
        """Note the frames a stream_datum announces; returns (stream, camera file, frames) for pixels of a frame
        stream, None for the other data keys."""
        try:
            camera, key = self._resources[doc["stream_resource"]]
        except KeyError:
            raise DocumentContractError(
                f"stream_datum {doc['uid']} refers to stream_resource {doc['stream_resource']!r}, which "
                "this run never emitted; emit the stream_resource first"
            ) from None
        stream = self.stream_name(doc["descriptor"])
        if key != IMAGE_DATA_KEY or stream not in FRAME_STREAMS:
            return None
        indices = doc["indices"]
        frames = FrameRange(indices["start"], indices["stop"])
        camera.streams.setdefault(stream, FrameSet()).add(frames)
        if stream == "projections":
            self.last_projections_file = camera.path
        return stream, camera, frames

    def camera(self, path: Path) -> CameraFile:
        """The camera file at ``path``, which must have been announced."""
        try:
            return self.files[normalized(path)]
        except KeyError:
            raise DocumentContractError(
                f"camera file {path} was never announced by a stream_resource (announced: "
                f"{', '.join(map(str, self.files)) or 'none'})"
            ) from None
