"""One tomogram analysed in slabs of z slices: the tasks of each step, equal to the whole-volume task's result.

``analyse_tomogram`` (tasks.py) holds the whole volume; where that does not fit a worker,
batch.py runs these steps instead, each step a task per slab (chunks.py plans them),
each step given the results of every slab of the step before:

1. ``find_slab_axis`` (once): the centre of rotation the whole reconstruction would find
   (recon/offline.py ``find_axis``), and the gated view where the scan was gated.
2. ``reconstruct_slab``: the slab's slices and a halo of the Gaussian filter's reach
   (parallel beam: from their detector rows only), the slab's smoothed slices kept.
3. ``histogram_slab``: its smoothed values counted on the volume's range; summed, they
   give the volume's Otsu threshold exactly.
4. ``bone_slab``: bone above the threshold, its 26-connected pieces in the slab.
5. ``labels_slab``: the cortex is the volume's largest piece of bone (the slabs' pieces
   joined across their faces, chunks.py), its pores per slice as in ``bone_and_pores``;
   then the pieces of bone tissue, for morphometry's own largest piece.
6. ``measure_slab``: morphometry's compartments per slice and the slab's sums (bone
   tissue, LCN, envelope, cortex voxels and their local thickness, the thickness from a
   halo at least the cortex's largest diameter plus a voxel, so it equals the volume's).
7. ``assemble_tomogram``: the volume and labels files the whole-volume task writes,
   written slab by slab; the lacunae found once on the LCN's bounding box (exact: a
   lacuna never reaches beyond it); the result JSON, then the slabs' files removed.

Every step writes its files atomically and a JSON of its result in the tomogram's chunk
folder (``<stem>_chunks``); a step finds that first, so a slab done before a worker was
killed is not done again. The chunk folder records the fingerprint of the tomogram task
and the slabs: a changed input, setting or plan starts it afresh.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy import ndimage

from ...recon.offline import find_axis, reconstruct_file
from ...volume_files import VolumeWriter, read_labels, read_provenance, read_volume, write_labels_slabs
from ..labels import Code, bone_tissue
from ..metrics import otsu_of_histogram
from ..morphometry import FULL_26, find_lacunae, slice_compartments
from ..thickness import local_thickness
from .chunks import Slab, largest_piece_labels
from .gating import gated_view
from .results import atomic_path, done_result, write_result
from .sources import TomogramRecord
from .tasks import (
    Layout,
    StudySettings,
    device_name,
    grey_porosity,
    provenance,
    segmentation_method,
    tomogram_fingerprint,
    tomogram_result,
)

HISTOGRAM_BINS = 256
"""Bins of Otsu's histogram (metrics.otsu_threshold's default)."""
GAUSSIAN_TRUNCATE = 4.0
"""scipy.ndimage.gaussian_filter's default: its kernel reaches int(4 sigma + 0.5) voxels."""


@dataclass(frozen=True)
class ChunkJob:
    """One tomogram analysed in ``slabs``: where its slab files go, and what its results are made from."""

    record: TomogramRecord
    layout: Layout
    settings: StudySettings
    slabs: tuple[Slab, ...]

    @property
    def folder(self) -> Path:
        return self.layout.tomogram(self.record, "chunks")

    def fingerprint(self) -> dict[str, Any]:
        """The tomogram task's fingerprint and the slabs: what every step's result is made from."""
        return {**tomogram_fingerprint(self.record, self.settings),
                "slabs": [[slab.first, slab.stop] for slab in self.slabs]}

    def file(self, step: str, index: int, suffix: str) -> Path:
        return self.folder / f"{step}_{index:04d}.{suffix}"


def stored_step(job: ChunkJob, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The stored result ``name``.json of this job's fingerprint, or ``compute()``'s, stored (with its seconds)."""
    path = job.folder / f"{name}.json"
    fingerprint = job.fingerprint()
    stored = done_result(path, fingerprint)
    if stored is not None:
        return stored
    tick = time.perf_counter()
    result = {**compute(), "fingerprint": fingerprint}
    result["seconds"] = time.perf_counter() - tick
    write_result(path, result)
    return result


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as partial, partial.open("wb") as file:
        np.save(file, array)


def gaussian_reach(sigma_voxels: float) -> int:
    """Voxels the Gaussian filter of ``sigma_voxels`` reaches on either side (scipy's kernel radius)."""
    return int(GAUSSIAN_TRUNCATE * sigma_voxels + 0.5)


def find_slab_axis(job: ChunkJob) -> dict[str, Any]:
    """Step 1: the reconstruction's input (the gated view of a retrospectively gated scan) and its axis."""
    started = time.time()

    def compute() -> dict[str, Any]:
        source, gating = job.record.path, {"gating": job.record.gating}
        if job.record.gating == "retrospective":
            source, kept, total = gated_view(job.record.path, job.layout.tomogram(job.record, "gated_view.h5"))
            gating.update(view=str(source), projections_gate_open=kept, projections_recorded=total)
        cor, _ = find_axis(source, settings=job.settings.recon, device=device_name())
        return {"source": str(source), "gating": gating, "cor": cor, "started": started}

    job.folder.mkdir(parents=True, exist_ok=True)
    return stored_step(job, "axis", compute)


def reconstruct_slab(job: ChunkJob, index: int, axis: dict[str, Any]) -> dict[str, Any]:
    """Step 2: the slab's slices and the Gaussian filter's halo reconstructed; its own smoothed slices kept."""
    slab, halo = job.slabs[index], gaussian_reach(job.settings.bone_filter_sigma_voxels)

    def compute() -> dict[str, Any]:
        path = job.file("volume", index, "h5")
        with atomic_path(path) as partial:
            reconstruct_file(axis["source"], partial, cor=axis["cor"], settings=job.settings.recon,
                             device=device_name(), slices=slab.read(halo))
        smooth = ndimage.gaussian_filter(read_volume(path).data, job.settings.bone_filter_sigma_voxels)
        smooth = smooth[slab.inside(halo)]
        _save(job.file("smooth", index, "npy"), smooth)
        return {"low": float(smooth.min()), "high": float(smooth.max())}

    return stored_step(job, f"volume_{index:04d}", compute)


def histogram_slab(job: ChunkJob, index: int, reconstructed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Step 3: the slab's smoothed values counted in Otsu's bins over the whole volume's range."""
    def compute() -> dict[str, Any]:
        span = (min(r["low"] for r in reconstructed), max(r["high"] for r in reconstructed))
        smooth = np.load(job.file("smooth", index, "npy"))
        return {"counts": np.histogram(smooth, bins=HISTOGRAM_BINS, range=span)[0].tolist(), "range": span}

    return stored_step(job, f"histogram_{index:04d}", compute)


def bone_slab(job: ChunkJob, index: int, histograms: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Step 4: bone above the volume's Otsu threshold, and its 26-connected pieces in the slab."""
    def compute() -> dict[str, Any]:
        counts = np.sum([h["counts"] for h in histograms], axis=0)
        threshold = otsu_of_histogram(counts, np.histogram_bin_edges([], HISTOGRAM_BINS, histograms[0]["range"]))
        pieces, _ = ndimage.label(np.load(job.file("smooth", index, "npy")) > threshold, structure=FULL_26)
        _save(job.file("bone", index, "npy"), pieces)
        return {"threshold": threshold, "sizes": np.bincount(pieces.ravel()).tolist()}

    return stored_step(job, f"bone_{index:04d}", compute)


def _largest(job: ChunkJob, step: str, results: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Per slab, its pieces (files ``step``) that are the volume's largest piece."""
    faces = []
    for index in range(len(job.slabs)):
        pieces = np.load(job.file(step, index, "npy"), mmap_mode="r")
        faces.append((np.array(pieces[0]), np.array(pieces[-1])))
    return largest_piece_labels([r["sizes"] for r in results], faces)


def labels_slab(job: ChunkJob, index: int, bones: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Step 5: the slab's labels (bone, and LCN/pore where the volume's cortex encloses non-bone), and the pieces
    of its bone tissue."""
    def compute() -> dict[str, Any]:
        pieces = np.load(job.file("bone", index, "npy"))
        labels = np.where(pieces > 0, Code.BONE, Code.BACKGROUND).astype(np.uint8)
        cortex = slice_compartments(np.isin(pieces, _largest(job, "bone", bones)[index]))[0]
        labels[cortex & (labels != Code.BONE)] = Code.LCN
        _save(job.file("labels", index, "npy"), labels)
        tissue = bone_tissue(labels)
        tissue_pieces, _ = ndimage.label(tissue, structure=FULL_26)
        _save(job.file("tissue", index, "npy"), tissue_pieces)
        in_slice = max((float(ndimage.distance_transform_edt(s).max()) for s in tissue if s.any()), default=0.0)
        lcn = labels == Code.LCN
        return {"sizes": np.bincount(tissue_pieces.ravel()).tolist(), "tissue_voxels": int(tissue.sum()),
                "lcn_voxels": int(np.count_nonzero(lcn)), "radius_bound": in_slice,
                "lcn_box": _bounds(lcn, job.slabs[index].first)}

    return stored_step(job, f"labels_{index:04d}", compute)


def thickness_halo(labelled: Sequence[dict[str, Any]]) -> int:
    """Slices beyond a slab that its cortex's local thickness depends on: a ball reaching a slab voxel is centred
    within the largest radius R, and its radius is set by background within R of its centre (one more slice for
    the ridge test among neighbours). R is bounded by the largest in-slice distance to non-tissue (thickness.py)."""
    return math.ceil(2 * max(r["radius_bound"] for r in labelled)) + 2


def measure_slab(job: ChunkJob, index: int, labelled: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Step 6: morphometry's sums over the slab: envelope and cortex voxels, the cortex's local thickness."""
    slab, halo = job.slabs[index], thickness_halo(labelled)

    def compute() -> dict[str, Any]:
        keep = _largest(job, "tissue", labelled)
        first, stop = slab.read(halo)
        pieces = [np.isin(np.load(job.file("tissue", j, "npy"), mmap_mode="r")[
            max(first, s.first) - s.first:min(stop, s.stop) - s.first], keep[j])
            for j, s in enumerate(job.slabs) if s.first < stop and s.stop > first]
        cortex, _, envelope = slice_compartments(np.concatenate(pieces))
        own = slab.inside(halo)
        thickness = local_thickness(cortex, job.settings.morphometry.thickness_step_voxels)[own][cortex[own]]
        return {"envelope_voxels": int(envelope[own].sum()), "cortex_voxels": int(thickness.size),
                "cortex_thickness_sum": float(thickness.sum(dtype=np.float64)), "halo": halo}

    return stored_step(job, f"measure_{index:04d}", compute)


def _bounds(mask: np.ndarray, first: int) -> list[int] | None:
    """(z0, z1, y0, y1, x0, x1) of the voxels of ``mask`` (a slab starting at slice ``first``), ends included."""
    if not mask.any():
        return None
    ends = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[[0, -1]] for axis in range(3)]
    return [int(first + ends[0][0]), int(first + ends[0][1]), *(int(v) for pair in ends[1:] for v in pair)]


def _lacunae_box(job: ChunkJob, labelled: Sequence[dict[str, Any]], shape: tuple[int, int, int]) -> np.ndarray:
    """The LCN mask within the slabs' LCN bounding box grown by one voxel (within the volume), read slab by slab."""
    boxes = np.array([r["lcn_box"] for r in labelled if r["lcn_box"] is not None])
    if not boxes.size:
        return np.zeros((0, 0, 0), bool)
    z, y, x = (slice(max(0, boxes[:, 2 * a].min() - 1), min(n, boxes[:, 2 * a + 1].max() + 2))
               for a, n in enumerate(shape))
    return np.concatenate([np.load(job.file("labels", i, "npy"), mmap_mode="r")[
        max(z.start, s.first) - s.first:min(z.stop, s.stop) - s.first, y, x] == Code.LCN
        for i, s in enumerate(job.slabs) if s.first < z.stop and s.stop > z.start])


def assemble_tomogram(job: ChunkJob, axis: dict[str, Any], reconstructed: Sequence[dict[str, Any]],
                      histograms: Sequence[dict[str, Any]], bones: Sequence[dict[str, Any]],
                      labelled: Sequence[dict[str, Any]], measured: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Step 7: the volume and labels files and the result JSON of ``analyse_tomogram``, from the slabs' steps."""
    record, settings = job.record, job.settings
    volume_path, labels_path = job.layout.tomogram(record, "volume.h5"), job.layout.tomogram(record, "labels.h5")
    halo = gaussian_reach(settings.bone_filter_sigma_voxels)
    with h5py.File(job.file("volume", 0, "h5"), "r") as h5:
        shape, voxel_um = (job.slabs[-1].depth, *h5["volume"].shape[1:]), float(h5["volume"].attrs["voxel_size_um"])
        made = read_provenance(h5)
    with atomic_path(volume_path) as partial, VolumeWriter(partial, shape, voxel_um) as writer:
        for index, slab in enumerate(job.slabs):
            with h5py.File(job.file("volume", index, "h5"), "r") as h5:
                writer.write(slab.first, h5["volume"][slab.inside(halo)])
        angles = made.pop("angles_deg")
        made.pop("slices")
        writer.provenance({**made, "slabs": [[s.first, s.stop] for s in job.slabs],
                           "seconds": round(sum(r["seconds"] for r in reconstructed), 3)}, angles)
    with atomic_path(labels_path) as partial:
        write_labels_slabs(partial, shape, voxel_um, {
            "generator": "nanoscope_daq.analysis.study", "volume": str(volume_path), "method": segmentation_method(
                settings.bone_filter_sigma_voxels), "raw_run_uid": record.raw_run_uid,
            "slabs": [[s.first, s.stop] for s in job.slabs]},
            ((slab.first, np.load(job.file("labels", i, "npy"))) for i, slab in enumerate(job.slabs)))
    tick = time.perf_counter()
    voxel_mm3 = (voxel_um * 1e-3) ** 3
    tissue_mm3 = sum(r["tissue_voxels"] for r in labelled) * voxel_mm3
    lcn_mm3 = sum(r["lcn_voxels"] for r in labelled) * voxel_mm3
    tv_mm3 = sum(r["envelope_voxels"] for r in measured) * voxel_mm3
    lcn = _lacunae_box(job, labelled, shape)
    lacunae = find_lacunae(lcn, voxel_um, tissue_mm3, settings.morphometry)
    cortex_voxels = sum(r["cortex_voxels"] for r in measured)
    ct_th = sum(r["cortex_thickness_sum"] for r in measured) / cortex_voxels if cortex_voxels else float("nan")
    measures = {"bv_mm3": float(tissue_mm3), "tv_mm3": float(tv_mm3),
                "bv_tv": float(tissue_mm3 / tv_mm3) if tv_mm3 > 0 else float("nan"),
                "ct_th_um": float(ct_th * voxel_um), "porosity": float(lcn_mm3 / tissue_mm3),
                # the grey levels and the cortex in 3-D: the whole volume in this task (docs/analysis.md, "Limits")
                "cortical_porosity": grey_porosity(read_volume(volume_path).data, read_labels(labels_path).data),
                "lacunae_count": lacunae.count, "lacunae_density_per_mm3": lacunae.density_per_mm3}
    seconds = {"reconstruction": axis["seconds"] + sum(r["seconds"] for r in reconstructed),
               "segmentation": sum(r["seconds"] for r in (*histograms, *bones, *labelled)),
               "morphometry": sum(r["seconds"] for r in measured) + time.perf_counter() - tick}
    chunks = {"slabs": [[s.first, s.stop] for s in job.slabs], "tasks": 2 + 5 * len(job.slabs),
              "reconstruction_seconds": [r["seconds"] for r in reconstructed],
              "reconstruction_halo_slices": halo, "thickness_halo_slices": measured[0]["halo"],
              "lacunae_box_voxels": int(lcn.size), "volume_voxels": int(np.prod(shape))}
    result = tomogram_result(record, tomogram_fingerprint(record, settings), voxel_um, axis["gating"],
                             volume_path, labels_path, measures, provenance(axis["started"], seconds, device_name()))
    result["chunks"] = chunks
    write_result(job.layout.tomogram(record, "analysis.json"), result)
    shutil.rmtree(job.folder, ignore_errors=True)
    return result
