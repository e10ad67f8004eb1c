"""Writes one tomogram as an NXtomo file (NeXus application definition, nxtomo path version 2.1).

Layout (units in each dataset's ``units`` attribute)::

    /entry                        NXentry, definition NXtomo; title, start_time, end_time,
                                  experiment_complete (False: the tomogram was cut short)
      instrument/detector         NXdetector: data (virtual: the camera file's frames in
                                  acquisition order), image_key, image_key_control
                                  (0 projection, 1 flat, 2 dark, 3 invalid), sequence_number
                                  (frame index in the camera file), x/y_pixel_size, distance
                                  (sample to detector), count_time, start_time (per frame)
      instrument/source           NXsource: X-ray tube, voltage, power, focal spot, distance
      instrument/beam             NXbeam: incident_energy (the anode's K-alpha line)
      instrument/geometry         NXcollection: the start document's geometry
      beam                        link to instrument/beam (older NXtomo readers)
      sample                      NXsample: name (subject id), rotation_angle (measured,
                                  per frame), x/y_pixel_size (voxel), propagation_distance;
                                  subject and dose (NXcollection)
      control                     NXmonitor: data = source current per frame
      frames                      NXcollection: every per-frame value the run recorded
      acquisition                 NXcollection: plan, parameters, run uid, scan id, grid,
                                  how the run ended, why frames were set invalid, and
                                  (recovery) why ``nanoscope recover`` wrote the file; /entry
                                  then has the attributes recovered and recovery_reason
      data                        NXdata: links to data, image_key, rotation_angle
    /exchange                     Data Exchange view (see exchange.py)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from event_model import NumpyEncoder

from ..documents import FRAME_DATA_KEY_UNITS, DocumentContractError, ImageKey
from .camera_file import CameraFrames
from .exchange import write_exchange
from .image_keys import FrameClassification
from .tomogram import Tomogram
from .virtual_frames import link_frames

NXTOMO_VERSION = 2.1
SOURCE_TYPE = "Fixed Tube X-ray"
"""NXsource type of a laboratory microfocus tube (one of the values nxtomo accepts)."""


@dataclass(frozen=True)
class RunRecord:
    """What a file records of its run: the start document and how the run ended."""

    start: Mapping[str, Any]
    exit_status: str
    reason: str = ""
    recovery: str = ""
    """Why the file was written by ``nanoscope recover`` from a journal (empty: written by the run itself)."""


def write_nxtomo(
    path: Path, tomogram: Tomogram, frames: CameraFrames, classification: FrameClassification, run: RunRecord
) -> None:
    """Write ``path`` (replacing it) for ``tomogram``, whose frames are ``frames`` in acquisition order.

    The file appears complete or not at all: it is written under a temporary name first.
    """
    partial = path.with_name(path.name + ".part")
    try:
        with h5py.File(partial, "w") as h5:
            h5.attrs["default"] = "entry"
            h5.attrs["creator"] = "nanoscope-daq NXtomo writer"
            h5.attrs["file_time"] = datetime.now(UTC).astimezone().isoformat()
            rotation_angle = frames.values["rotation_angle"]
            _write_entry(h5, tomogram, frames, classification, run)
            write_exchange(h5, frames, classification.image_key, rotation_angle)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_entry(
    h5: h5py.File, tomogram: Tomogram, frames: CameraFrames, classification: FrameClassification, run: RunRecord
) -> None:
    start = run.start
    geometry = _section(start, "geometry")
    detector_doc = _section(start, "detector")
    subject = start.get("subject") or {}
    keys = classification.image_key
    times = frames.values["frame_time"]
    projections = tomogram.nominal_keys() == ImageKey.PROJECTION
    start_time = tomogram.start_time if tomogram.start_time is not None else float(times[projections][0])
    end_time = tomogram.end_time if tomogram.end_time is not None else float(times[projections][-1])

    entry = _group(h5, "entry", "NXentry")
    entry.attrs.update(definition="NXtomo", version=NXTOMO_VERSION, default="data")
    entry.attrs["experiment_complete"] = tomogram.complete
    if run.recovery:
        entry.attrs["recovered"] = True
        entry.attrs["recovery_reason"] = run.recovery
    entry["definition"] = "NXtomo"
    entry["title"] = _title(start, tomogram)
    entry["start_time"] = _iso(start_time)
    entry["end_time"] = _iso(end_time)
    complete = entry.create_dataset("experiment_complete", data=tomogram.complete)
    complete.attrs["doc"] = "False when the run stopped before this tomogram was finished"

    instrument = _group(entry, "instrument", "NXinstrument")
    detector = _group(instrument, "detector", "NXdetector")
    data = link_frames(detector, "data", frames, np.arange(len(keys)))
    data.attrs["interpretation"] = "image"
    data.attrs["units"] = "counts"
    detector.create_dataset("image_key", data=keys)
    detector.create_dataset("image_key_control", data=keys)
    sequence = detector.create_dataset("sequence_number", data=frames.indices.astype(np.uint32))
    sequence.attrs["doc"] = f"index of each frame in the camera file {frames.path.name}"
    pixel_m = _number(geometry, "geometry", "detector_pixel_um") * 1e-6
    _quantity(detector, "x_pixel_size", pixel_m, "m")
    _quantity(detector, "y_pixel_size", pixel_m, "m")
    source_sample_mm = _number(geometry, "geometry", "source_sample_mm")
    sample_detector_mm = _number(geometry, "geometry", "source_detector_mm") - source_sample_mm
    _quantity(detector, "distance", sample_detector_mm * 1e-3, "m")
    magnification = _number(geometry, "geometry", "magnification")
    detector["magnification"] = magnification
    exposure_s = _number(detector_doc, "detector", "exposure_s")
    _quantity(detector, "count_time", np.full(len(keys), exposure_s), "s")
    frame_start = _quantity(detector, "start_time", times - times[0], "s")
    frame_start.attrs["start"] = _iso(float(times[0]))
    frame_start.attrs["doc"] = "exposure start of each frame, from the start attribute"
    _optional(detector, "description", detector_doc.get("model"))
    _optional(detector, "binning", detector_doc.get("binning"))
    _optional(detector, "pixel_encoding", detector_doc.get("pixel_encoding"))
    if detector_doc.get("period_s") is not None:
        _quantity(detector, "frame_period", float(detector_doc["period_s"]), "s")

    _write_source(instrument, start, geometry)
    _write_geometry(instrument, geometry)
    entry["beam"] = h5py.SoftLink(instrument["beam"].name)

    sample = _group(entry, "sample", "NXsample")
    _optional(sample, "name", subject.get("subject_id"))
    _quantity(sample, "rotation_angle", frames.values["rotation_angle"], "deg")
    voxel_m = _number(geometry, "geometry", "voxel_size_um") * 1e-6
    _quantity(sample, "x_pixel_size", voxel_m, "m")
    _quantity(sample, "y_pixel_size", voxel_m, "m")
    propagation = _quantity(sample, "propagation_distance", sample_detector_mm * 1e-3 / magnification, "m")
    propagation.attrs["doc"] = "effective propagation distance: sample to detector / magnification"
    _collection(sample, "subject", subject)
    _collection(sample, "dose", start.get("dose") or {}, units_by_suffix={"_gy": "Gy"})

    control = _group(entry, "control", "NXmonitor")
    _quantity(control, "data", frames.values["source_current"], "mA").attrs["doc"] = (
        "X-ray source current at mid-exposure of each frame (0: no beam)"
    )

    per_frame = _group(entry, "frames", "NXcollection")
    per_frame.attrs["doc"] = "values the instrument recorded with each frame of instrument/detector/data"
    per_frame.create_dataset("camera_frame_index", data=frames.indices)
    linked = {"rotation_angle": sample["rotation_angle"], "source_current": control["data"]}
    for key, values in frames.values.items():
        if key in linked:
            per_frame[key] = linked[key]
        else:
            _quantity(per_frame, key, values, FRAME_DATA_KEY_UNITS[key])

    _write_acquisition(entry, start, tomogram, frames, classification, run)

    nxdata = _group(entry, "data", "NXdata")
    nxdata.attrs["signal"] = "data"
    for name, target in (
        ("data", data),
        ("image_key", detector["image_key"]),
        ("image_key_control", detector["image_key_control"]),
        ("rotation_angle", sample["rotation_angle"]),
    ):
        nxdata[name] = target


def _write_source(instrument: h5py.Group, start: Mapping[str, Any], geometry: Mapping[str, Any]) -> None:
    source_doc = _section(start, "source")
    source = _group(instrument, "source", "NXsource")
    anode = source_doc.get("anode")
    source["name"] = f"microfocus X-ray tube, {anode} anode" if anode else "microfocus X-ray tube"
    source["type"] = SOURCE_TYPE
    source["probe"] = "x-ray"
    _optional(source, "target_material", anode)
    for key, name, units in (("kv", "voltage", "kV"), ("power_w", "power", "W"), ("spot_um", "focal_spot_size", "um")):
        if source_doc.get(key) is not None:
            _quantity(source, name, float(source_doc[key]), units)
    if geometry.get("type") == "cone":
        distance = _quantity(source, "distance", -_number(geometry, "geometry", "source_sample_mm") * 1e-3, "m")
        distance.attrs["doc"] = "source to sample, negative: upstream of the sample"
    beam = _group(instrument, "beam", "NXbeam")
    energy = _quantity(beam, "incident_energy", _number(source_doc, "source", "energy_kev"), "keV")
    energy.attrs["doc"] = "K-alpha line of the anode; the tube's spectrum is polychromatic"


def _write_geometry(instrument: h5py.Group, geometry: Mapping[str, Any]) -> None:
    group = _group(instrument, "geometry", "NXcollection")
    fields = (
        ("type", "type", None),
        ("source_sample_mm", "source_sample_distance", "mm"),
        ("source_detector_mm", "source_detector_distance", "mm"),
        ("magnification", "magnification", None),
        ("detector_pixel_um", "detector_pixel_size", "um"),
        ("voxel_size_um", "voxel_size", "um"),
        ("rows", "rows", None),
        ("cols", "cols", None),
    )
    for key, name, units in fields:
        if geometry.get(key) is not None:
            dset = group.create_dataset(name, data=geometry[key])
            if units:
                dset.attrs["units"] = units


def _write_acquisition(
    entry: h5py.Group,
    start: Mapping[str, Any],
    tomogram: Tomogram,
    frames: CameraFrames,
    classification: FrameClassification,
    run: RunRecord,
) -> None:
    group = _group(entry, "acquisition", "NXcollection")
    group.attrs["doc"] = "the bluesky run this tomogram belongs to, and how its frames were judged"
    group["run_uid"] = str(start["uid"])
    _optional(group, "scan_id", start.get("scan_id"))
    _optional(group, "plan_name", start.get("plan_name"))
    group["plan_args"] = _json(start.get("plan_args") or {})
    group["scan"] = _json(start.get("scan") or {})
    group["start_document"] = _json(start)
    group["tomogram"] = tomogram.index
    group["time_point"] = tomogram.time_point
    if not math.isnan(tomogram.force_n):
        _quantity(group, "force", tomogram.force_n, "N")
    _quantity(group, "grid_start", tomogram.grid.start_deg, "deg")
    _quantity(group, "grid_step", tomogram.grid.step_deg, "deg")
    group["grid_count"] = tomogram.grid.count
    group["grid_angles_covered"] = classification.angles_covered
    group["camera_file"] = frames.path.name
    group["run_exit_status"] = run.exit_status
    group["run_exit_reason"] = run.reason
    if run.recovery:
        group["recovery"] = run.recovery
    invalid = group.create_group("invalid_frames")
    invalid.attrs["NX_class"] = "NXcollection"
    invalid.attrs["doc"] = (
        "frames set to image_key 3: beam_state (no beam for a flat or projection, beam on for a dark), "
        "frame_type (measured type is not the stream's), off_grid (projection off the planned angles), "
        "retaken (a later valid projection of the same grid angle counts)"
    )
    for reason, count in classification.invalid.items():
        invalid[reason] = count


def _title(start: Mapping[str, Any], tomogram: Tomogram) -> str:
    subject = start.get("subject") or {}
    title = f"{start.get('plan_name', 'scan')} tomogram {tomogram.index}"
    if subject.get("subject_id"):
        title += f" of {subject['subject_id']}"
        if subject.get("day") is not None:
            title += f", day {subject['day']}"
    return title if tomogram.complete else title + " (incomplete)"


def _section(start: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = start.get(name)
    if not isinstance(section, Mapping):
        raise DocumentContractError(
            f"the start document has no {name!r} section; docs/documents.md requires it of tomography plans"
        )
    return section


def _number(section: Mapping[str, Any], section_name: str, key: str) -> float:
    try:
        return float(section[key])
    except (KeyError, TypeError, ValueError):
        raise DocumentContractError(
            f"the start document's {section_name!r} needs a number {key!r} (got {section.get(key)!r})"
        ) from None


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.create_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def _quantity(group: h5py.Group, name: str, value: Any, units: str) -> h5py.Dataset:
    dset = group.create_dataset(name, data=value)
    if units:
        dset.attrs["units"] = units
    return dset


def _optional(group: h5py.Group, name: str, value: Any) -> None:
    if value is not None:
        group[name] = value


def _collection(
    parent: h5py.Group, name: str, values: Mapping[str, Any], units_by_suffix: Mapping[str, str] | None = None
) -> None:
    group = _group(parent, name, "NXcollection")
    for key, value in values.items():
        if value is None:
            continue
        dset = group.create_dataset(key, data=value if isinstance(value, (str, int, float, bool)) else _json(value))
        for suffix, units in (units_by_suffix or {}).items():
            if key.endswith(suffix):
                dset.attrs["units"] = units


def _json(value: Any) -> str:
    return json.dumps(value, cls=NumpyEncoder, sort_keys=True)


def _iso(posix_s: float) -> str:
    return datetime.fromtimestamp(posix_s, tz=UTC).astimezone().isoformat()
