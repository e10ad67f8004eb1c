"""Segmentation of a volume file into a labels file: the code path of `nanoscope segment` and the online pipeline.

torch and scipy.ndimage load only once the volume has been read and the model file found,
so that `nanoscope segment` refuses a bad file in half a second.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AnalysisConfig
from ..volume_files import Volume, read_volume, write_labels
from .model_files import load_model


def segment_array(volume: np.ndarray, voxel_size_um: float, settings: AnalysisConfig,
                  model_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Post-processed labels, the outer geometry and the provenance of segmenting ``volume``."""
    path = model_path or settings.model_path or None
    model, info = load_model(path)  # loads torch, once the volume and the model file are known to be good
    import torch

    from .inference import pick_device, segment_volume
    from .postprocess import outer_geometry, postprocess

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = pick_device(settings.device)
    start = time.perf_counter()
    raw = segment_volume(model, info, volume, settings.tile_pixels, settings.tile_overlap_pixels, device)
    labels = postprocess(raw, settings.island_min_voxels, settings.closing_radius_voxels)
    provenance = {
        "generator": "nanoscope_daq.analysis.segmentation", "model": str(path or "shipped default"),
        "architecture": info.architecture, "task": info.task, "model_voxel_size_um": info.voxel_size_um,
        "device": str(device), "tile_pixels": settings.tile_pixels, "overlap_pixels": settings.tile_overlap_pixels,
        "island_min_voxels": settings.island_min_voxels, "closing_radius_voxels": settings.closing_radius_voxels,
        "seconds": time.perf_counter() - start,
    }
    if abs(voxel_size_um - info.voxel_size_um) > 0.25 * info.voxel_size_um:
        provenance["warning"] = (f"volume voxel {voxel_size_um:g} um differs from the model's "
                                 f"{info.voxel_size_um:g} um by more than 25 %")
    return labels, outer_geometry(labels), provenance


def segment_file(volume_path: str | Path, labels_path: str | Path, settings: AnalysisConfig,
                 model_path: str | Path | None = None) -> dict[str, Any]:
    """Read a volume file, segment it, write the labels file (with ``/envelope``); returns the provenance."""
    volume = read_volume(volume_path)
    labels, envelope, provenance = segment_array(volume.data, volume.voxel_size_um, settings, model_path)
    provenance["source"] = {"file": str(volume_path), **volume.provenance}
    write_labels(labels_path, Volume(labels, volume.voxel_size_um, provenance),
                 extra={"envelope": envelope.astype(np.uint8)})
    return provenance
