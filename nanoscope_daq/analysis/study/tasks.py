"""The study's units of work: one tomogram, one interval of a subject; each done once, written atomically.

Per tomogram (``analyse_tomogram``): offline reconstruction (recon/offline.py, the
``nanoscope recon`` path, on CUDA when the worker has it; of the gate-open projections
when the scan was gated retrospectively, gating.py), bone segmentation as
analysis/longitudinal.py does it (Gaussian filter, Otsu) with the pores the cortex
encloses labelled LCN/pore (morphometry.compartments), and morphometry.py. Per interval
(``analyse_interval``): remodeling.py between the labels of two consecutive time points
(rigid registration on the pores, formed / resorbed bone, BFR, BRR, MAR, ...), the formed
volumes from the two reconstructions' grey values (apposition.py: sub-voxel, so an
apposition under a voxel per interval is measured, not read at the labels' floor).

Each writes its files atomically and its result JSON (``*_analysis.json``,
``*_remodeling.json``) last, the done-marker (results.py). A result counts as done when
it records the same input fingerprint (file size and modification time, or the inputs'
results) and the same settings; a task finds its own result first, so a task the
scheduler reruns (a worker killed after it finished) costs a file read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...config import Config, ReconConfig
from ...recon.offline import reconstruct_file
from ...volume_files import Volume, read_labels, read_volume, write_labels
from ..apposition import NoGreyLevels, cortical_porosity
from ..labels import Code, bone_tissue
from ..longitudinal import bone_labels
from ..morphometry import Morphometry, MorphometrySettings, compartments, morphometry
from ..remodeling import Remodeling, remodeling
from .gating import gated_view
from .results import atomic_path, done_result, file_fingerprint, write_result
from .sources import TomogramRecord

RESULT_FORMAT = 2
"""Bumped when a result's content changes meaning: older results are then redone (2: cortical_porosity)."""
INTERVAL_FORMAT = 3
"""The same for interval results alone (2: formed volumes from the grey values, no longer from the labels;
3: resorption cavities grown to the grey values' half level)."""
TOMOGRAM_MEASURES = ("bv_mm3", "tv_mm3", "bv_tv", "ct_th_um", "porosity", "cortical_porosity", "lacunae_count",
                     "lacunae_density_per_mm3")
INTERVAL_MEASURES = ("bfr_per_day", "brr_per_day", "mar_um_per_day", "mar_periosteal_um_per_day",
                     "mar_endosteal_um_per_day", "mrr_um_per_day", "ms_bs", "es_bs")


@dataclass(frozen=True)
class StudySettings:
    """Everything that changes a result (its hash is part of the done-check)."""

    recon: ReconConfig
    morphometry: MorphometrySettings
    bone_filter_sigma_voxels: float
    min_cluster_voxels: int
    min_quiescent_fraction: float

    @classmethod
    def from_config(cls, config: Config) -> StudySettings:
        a = config.analysis
        return cls(config.recon, MorphometrySettings(a.lacuna_min_volume_um3, a.lacuna_min_thickness_um,
                                                     a.thickness_step_voxels),
                   config.study.bone_filter_sigma_voxels, a.remodeling_min_cluster_voxels,
                   config.study.min_quiescent_fraction)

    def digest(self, *names: str) -> str:
        """Hash of the named settings: a change of one redoes only the tasks it affects."""
        chosen = {name: dataclasses.asdict(self)[name] for name in names}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


TOMOGRAM_SETTINGS = ("recon", "morphometry", "bone_filter_sigma_voxels")
INTERVAL_SETTINGS = ("min_cluster_voxels", "min_quiescent_fraction")


@dataclass(frozen=True)
class Layout:
    """Where results go: next to each input, or under ``out/<cohort>/<subject>/`` when ``out`` is given."""

    out: Path | None = None

    def folder(self, record: TomogramRecord) -> Path:
        return self.out / (record.cohort or "no-cohort") / record.subject_id if self.out else record.path.parent

    def tomogram(self, record: TomogramRecord, suffix: str) -> Path:
        return self.folder(record) / f"{record.path.stem}_{suffix}"

    def interval(self, before: TomogramRecord, after: TomogramRecord) -> Path:
        return self.folder(after) / f"{after.subject_id}_day{before.day:g}-{after.day:g}_remodeling.json"


def bone_and_pores(volume: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """Labels of an absorption volume: bone (longitudinal.bone_labels), and LCN/pore where the cortex encloses
    non-bone voxels (canals, lacunae large enough to survive the filter)."""
    labels = bone_labels(volume, sigma_voxels)
    cortex = compartments(labels == Code.BONE)[0]
    labels[cortex & (labels != Code.BONE)] = Code.LCN
    return labels


def tomogram_fingerprint(record: TomogramRecord, settings: StudySettings) -> dict[str, Any]:
    """What a tomogram's result is made from: the NXtomo file as it is now, and the settings."""
    return {"format": RESULT_FORMAT, "input": file_fingerprint(record.path),
            "settings": settings.digest(*TOMOGRAM_SETTINGS)}


def interval_fingerprint(before: dict[str, Any], after: dict[str, Any], settings: StudySettings) -> dict[str, Any]:
    """What an interval's result is made from: its two tomograms' fingerprints, and the settings."""
    return {"format": INTERVAL_FORMAT, "inputs": [before, after], "settings": settings.digest(*INTERVAL_SETTINGS)}


def provenance(started: float, seconds: dict[str, float], device: str) -> dict[str, Any]:
    """Who made a result, where, when, with what, and how long each stage took."""
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = "serial"
    return {"generator": "nanoscope_daq.analysis.study", "nanoscope_daq": __version__, "host": socket.gethostname(),
            "pid": os.getpid(), "worker": worker, "device": device,
            "started": datetime.fromtimestamp(started, UTC).isoformat(),
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}


def device_name() -> str:
    """Where this worker reconstructs: 'cuda' when it has a GPU, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def segmentation_method(sigma_voxels: float) -> str:
    """How ``bone_and_pores`` segments (the labels file's provenance)."""
    return (f"Gaussian sigma {sigma_voxels} voxels, Otsu threshold; pores enclosed by the cortex labelled "
            "LCN/pore")


def tomogram_measures(measured: Morphometry, cortical: float) -> dict[str, Any]:
    """The study's measures (TOMOGRAM_MEASURES) of a tomogram's morphometry and its ``cortical`` porosity (from
    the grey values: grey_porosity)."""
    return {"bv_mm3": measured.bv_mm3, "tv_mm3": measured.tv_mm3, "bv_tv": measured.bv_tv,
            "ct_th_um": measured.ct_th_um, "porosity": measured.porosity, "cortical_porosity": cortical,
            "lacunae_count": measured.lacunae.count, "lacunae_density_per_mm3": measured.lacunae.density_per_mm3}


def grey_porosity(volume: np.ndarray, labels: np.ndarray) -> float:
    """The cortex's porosity from the grey values of ``volume`` (apposition.cortical_porosity: every pore by its
    volume, where ``porosity`` counts the pores the segmentation resolved), NaN where they cannot be read."""
    tissue = bone_tissue(labels)
    solid = tissue | compartments(tissue)[0]
    cortex, marrow, envelope = compartments(solid)
    try:
        return cortical_porosity(volume, solid, cortex, envelope, marrow)
    except NoGreyLevels:
        return float("nan")


def tomogram_result(record: TomogramRecord, fingerprint: dict[str, Any], voxel_size_um: float,
                    gating: dict[str, Any], volume_path: Path, labels_path: Path, measures: dict[str, Any],
                    made: dict[str, Any]) -> dict[str, Any]:
    """A tomogram's result JSON (whole volume or slabs: the same keys)."""
    return {"kind": "tomogram", "fingerprint": fingerprint, "record": _record_dict(record),
            "raw_run_uid": record.raw_run_uid, "voxel_size_um": voxel_size_um, "gating": gating,
            "outputs": {"volume": str(volume_path), "labels": str(labels_path)},
            "measures": measures, "provenance": made}


def analyse_tomogram(record: TomogramRecord, layout: Layout, settings: StudySettings, redo: bool = False) -> dict:
    """Reconstruct, segment and measure one tomogram (or return its stored result unless ``redo``)."""
    result_path = layout.tomogram(record, "analysis.json")
    fingerprint = tomogram_fingerprint(record, settings)
    stored = None if redo else done_result(result_path, fingerprint)
    if stored is not None:
        return stored
    started, seconds, device = time.time(), {}, device_name()
    volume_path, labels_path = layout.tomogram(record, "volume.h5"), layout.tomogram(record, "labels.h5")
    tick = time.perf_counter()
    source, gating = record.path, {"gating": record.gating}
    if record.gating == "retrospective":  # prospective gating took only gate-open frames: nothing to drop
        source, kept, total = gated_view(record.path, layout.tomogram(record, "gated_view.h5"))
        gating.update(view=str(source), projections_gate_open=kept, projections_recorded=total)
    with atomic_path(volume_path) as partial:
        reconstruct_file(source, partial, settings=settings.recon, device=device)
    seconds["reconstruction"] = time.perf_counter() - tick
    tick = time.perf_counter()
    volume = read_volume(volume_path)
    labels = bone_and_pores(volume.data, settings.bone_filter_sigma_voxels)
    with atomic_path(labels_path) as partial:
        write_labels(partial, Volume(labels, volume.voxel_size_um, {
            "generator": "nanoscope_daq.analysis.study", "volume": str(volume_path),
            "method": segmentation_method(settings.bone_filter_sigma_voxels), "raw_run_uid": record.raw_run_uid}))
    seconds["segmentation"] = time.perf_counter() - tick
    tick = time.perf_counter()
    measures = tomogram_measures(morphometry(labels, volume.voxel_size_um, settings.morphometry),
                                 grey_porosity(volume.data, labels))
    seconds["morphometry"] = time.perf_counter() - tick
    result = tomogram_result(record, fingerprint, volume.voxel_size_um, gating, volume_path, labels_path, measures,
                             provenance(started, seconds, device))
    write_result(result_path, result)
    return result


def analyse_interval(before: dict, after: dict, layout: Layout, settings: StudySettings,
                     redo: bool = False) -> dict:
    """Register and compare two consecutive time points of one subject (their tomogram results)."""
    first, second = _record(before["record"]), _record(after["record"])
    result_path = layout.interval(first, second)
    fingerprint = interval_fingerprint(before["fingerprint"], after["fingerprint"], settings)
    stored = None if redo else done_result(result_path, fingerprint)
    if stored is not None:
        return stored
    started, tick = time.time(), time.perf_counter()
    baseline, followup = read_labels(before["outputs"]["labels"]), read_labels(after["outputs"]["labels"])
    volumes = read_volume(before["outputs"]["volume"]).data, read_volume(after["outputs"]["volume"]).data
    days = second.day - first.day
    change, registration = checked_remodeling(baseline, followup, days, settings, volumes)
    details = change.to_dict()
    result = {"kind": "interval", "fingerprint": fingerprint, "subject_id": first.subject_id,
              "cohort": first.cohort, "treatment": first.treatment, "from_day": first.day, "to_day": second.day,
              "raw_run_uids": [first.raw_run_uid, second.raw_run_uid],
              "measures": {k: details[k] for k in INTERVAL_MEASURES}, "remodeling": details,
              "registration": registration, "formed_volumes_from": change.formed_volumes_from,
              "provenance": provenance(started, {"registration_and_remodeling": time.perf_counter() - tick}, "cpu")}
    write_result(result_path, result)
    return result


def quiescent_fraction(change: Remodeling) -> float:
    """Fraction of the baseline's bone that is bone in the registered follow-up too."""
    return change.quiescent_mm3 / change.baseline_bv_mm3


def checked_remodeling(baseline: Volume, followup: Volume, days: float, settings: StudySettings,
                       volumes: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Remodeling, dict[str, Any]]:
    """remodeling.py with its registration checked: below ``min_quiescent_fraction`` of the baseline bone kept,
    the unregistered comparison is used if it passes, else the interval fails with why. ``volumes``: the
    reconstructions the labels were segmented from (baseline, follow-up), for sub-voxel formed volumes."""
    tried = {}
    for register in (True, False):
        change = remodeling(baseline.data, followup.data, baseline.voxel_size_um, days, register=register,
                            min_cluster_voxels=settings.min_cluster_voxels, volumes=volumes)
        tried["registered" if register else "unregistered"] = round(quiescent_fraction(change), 4)
        if quiescent_fraction(change) >= settings.min_quiescent_fraction:
            return change, {"method": "rigid registration" if register else
                            "none: the registration diverged, the unregistered comparison passed",
                            "quiescent_fraction": tried}
    raise ValueError(f"registration check failed: of the baseline's bone only {tried} is still bone in the follow-up "
                     f"(at least {settings.min_quiescent_fraction} expected); check both scans show the same bone, "
                     "or lower [study] min_quiescent_fraction")


def _record_dict(record: TomogramRecord) -> dict[str, Any]:
    return {**dataclasses.asdict(record), "path": str(record.path)}


def _record(data: dict[str, Any]) -> TomogramRecord:
    return TomogramRecord(**{**data, "path": Path(data["path"])})
