"""Retrospective gating for the offline reconstruction: an NXtomo view of the gate-open projections.

A retrospectively gated scan records every projection with its ``frames/gate`` (1 when
mid-exposure fell in the end-expiration window). The view is a small NXtomo file whose
frames are an external link to the original's (no pixel copied), whose image keys mark
the gate-closed projections invalid (3, which every NXtomo reader skips), and which
copies the rest of the entry the reconstruction reads (angles, times, geometry, beam).
``nanoscope recon`` / recon.offline then reconstructs it like any NXtomo file. It is
named ``*_gated_view.h5``, not ``.nxs``, so that a study never selects it as a tomogram.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from ...recon.nxtomo_reader import PROJECTION
from .results import atomic_path
from .sources import SelectionError

INVALID = 3
"""NXtomo image_key of a frame no reader uses (DESIGN.md; analysis does not import the pipeline's enum)."""
SKIPPED = {"data", "exchange"}
"""Entry groups not copied: NXdata and the Data Exchange view hold (virtual) frames."""


def gated_view(nxs: Path, view: Path) -> tuple[Path, int, int]:
    """Write the gate-open view of ``nxs`` at ``view``; returns it and (projections kept, projections in all)."""
    with h5py.File(nxs, "r") as source:
        entry = source["entry"]
        if "frames/gate" not in entry:
            raise SelectionError(f"{nxs} says it was gated retrospectively but holds no /entry/frames/gate; "
                                 "reconstruct it ungated (nanoscope recon) or rewrite it with the NXtomo writer")
        keys = entry["instrument/detector/image_key"][()].copy()
        projections = keys == PROJECTION
        closed = projections & (entry["frames/gate"][()] < 0.5)
        keys[closed] = INVALID
        with atomic_path(view) as partial, h5py.File(partial, "w") as out:
            copy = out.create_group("entry")
            copy.attrs.update(entry.attrs)
            for name in entry:
                link = entry.get(name, getlink=True)
                if isinstance(link, h5py.SoftLink):
                    copy[name] = h5py.SoftLink(link.path)
                elif name not in SKIPPED | {"instrument"}:
                    source.copy(entry[name], copy, name)
            instrument = copy.create_group("instrument")
            instrument.attrs.update(entry["instrument"].attrs)
            for name, node in entry["instrument"].items():
                if name != "detector":
                    source.copy(node, instrument, name)
            detector = instrument.create_group("detector")
            detector.attrs.update(entry["instrument/detector"].attrs)
            for name, node in entry["instrument/detector"].items():
                if name not in ("data", "image_key", "image_key_control"):
                    source.copy(node, detector, name)
            detector["data"] = h5py.ExternalLink(str(Path(nxs).resolve()), "/entry/instrument/detector/data")
            detector["image_key"] = keys
            detector["image_key_control"] = keys
            copy.attrs["gated_view_of"] = str(Path(nxs).resolve())
    return view, int(projections.sum() - closed.sum()), int(projections.sum())
