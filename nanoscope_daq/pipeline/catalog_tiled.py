"""bluesky's ``TiledWriter`` with the catalog's patches: frames as rows of the camera file, NXtomo links, no previews.

Split from catalog.py so that Tiled's client (over a second to import) loads only when a
catalog writer is made, not when a scan command starts (catalog.py, ``tiled_writer``).
"""

from __future__ import annotations

from pathlib import Path

from bluesky.callbacks.tiled_writer import TiledWriter
from bluesky.consolidators import CONSOLIDATOR_REGISTRY, HDF5Consolidator

from ..documents import TOMOGRAMS_STREAM
from .catalog import CAMERA_FILE_MIMETYPE, FRAME_ROWS_MIMETYPE, format_rows
from .frame_ranges import FrameRange, FrameSet
from .nxtomo_writer import nxtomo_path


class FrameRowsConsolidator(HDF5Consolidator):
    """Tiled's view of a stream's frames in a camera file: the rows the stream's ``stream_datum`` name.

    A stream's frames may be several runs of rows of one file (flats before and after the
    projections); consecutive ranges are merged. One camera file per stream and data key.
    """

    supported_mimetypes = {FRAME_ROWS_MIMETYPE}

    def __init__(self, stream_resource: dict, descriptor: dict) -> None:
        super().__init__(stream_resource, descriptor)
        self.frames = FrameSet()

    def consume_stream_datum(self, doc: dict) -> None:
        super().consume_stream_datum(doc)
        self.frames.add(FrameRange(doc["indices"]["start"], doc["indices"]["stop"]))

    def adapter_parameters(self) -> dict:
        return {**super().adapter_parameters(), "rows": format_rows(self.frames)}

    def update_from_stream_resource(self, stream_resource: dict) -> None:
        if stream_resource["uri"] != self.uri:
            raise ValueError(f"stream data key {self.data_key} spans two camera files ({self.uri}, "
                             f"{stream_resource['uri']}); the catalog maps one file per stream and data key")


CONSOLIDATOR_REGISTRY[FRAME_ROWS_MIMETYPE] = FrameRowsConsolidator


def _frame_rows(doc: dict) -> dict:
    """A camera file's ``stream_resource`` under the catalog's frame-rows mimetype, one row per frame."""
    if doc["mimetype"] == CAMERA_FILE_MIMETYPE:
        return {**doc, "mimetype": FRAME_ROWS_MIMETYPE, "parameters": {**doc["parameters"], "join_method": "stack"}}
    return doc


class _CatalogView:
    """What the catalog's tables receive: each tomogram's NXtomo file named, array previews left out.

    - The ``tomograms`` events gain ``nxtomo_file``, the file the NXtomo writer writes for
      that tomogram (beside its camera file), so a run links its NXtomo files.
    - Array data held in events (an analysis run's preview slices) is dropped: Tiled keeps
      event data in tables, one scalar per cell; previews are for live clients (0MQ), and
      the volumes they come from are files the analysis run names.
    """

    def __init__(self) -> None:
        self.dropped: dict[str, set[str]] = {}
        self.tomograms: set[str] = set()

    def descriptor(self, doc: dict) -> dict:
        keys = dict(doc["data_keys"])
        arrays = {key for key, spec in keys.items() if spec.get("dtype") == "array" and not spec.get("external")}
        self.dropped[doc["uid"]] = arrays
        for key in arrays:
            del keys[key]
        if doc.get("name") == TOMOGRAMS_STREAM and "file" in keys:
            self.tomograms.add(doc["uid"])
            keys["nxtomo_file"] = {"source": "nanoscope_daq.pipeline.nxtomo_writer", "dtype": "string", "shape": []}
        return {**doc, "data_keys": keys}

    def event(self, doc: dict) -> dict:
        arrays = self.dropped.get(doc["descriptor"], set())
        data = {k: v for k, v in doc["data"].items() if k not in arrays}
        timestamps = {k: v for k, v in doc["timestamps"].items() if k not in arrays}
        if doc["descriptor"] in self.tomograms:
            data["nxtomo_file"] = str(nxtomo_path(Path(data["file"]), int(data["tomogram"])))
            timestamps["nxtomo_file"] = doc["time"]
        return {**doc, "data": data, "timestamps": timestamps}


def patched_tiled_writer(client, batch_size: int) -> TiledWriter:
    """bluesky's ``TiledWriter`` with the catalog's patches (frame rows, NXtomo links, previews left out)."""
    view = _CatalogView()
    patches = {"stream_resource": _frame_rows, "descriptor": view.descriptor, "event": view.event}
    return TiledWriter(client, patches=patches, batch_size=batch_size)
