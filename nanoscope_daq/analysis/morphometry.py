"""Porosity, lacunae and standard bone morphometry of a labels volume, in physical units.

Compartments (labels codes of labels.py): bone tissue = bone + LCN (+ shade-off); the
cortex is the largest 26-connected piece of bone tissue; in every z slice its holes are
the marrow cavity (the largest hole) and pores or canals (all smaller holes, which
belong to the cortex's solid). Total volume (TV) is the periosteal envelope (cortex with
its holes filled). Trabecular bone is bone tissue inside the marrow cavity, which is the
trabecular TV. This split suits diaphyseal and metaphyseal sections; trabeculae joined
to the cortex count as cortex.

Thicknesses are mean local thicknesses (thickness.py): Ct.Th of the solid cortex, Tb.Th
of trabecular bone, Tb.Sp of the marrow space between trabeculae; Tb.N = 1 / (Tb.Th +
Tb.Sp) (Hildebrand et al., JBMR 14:1167, 1999). Conn.D is edge-corrected (euler.py).
Porosity = LCN volume / bone tissue volume, as in the simulator's ground truth. Lacunae
are the LCN pieces at least ``lacuna_min_thickness_um`` thick (canaliculi are thinner);
complete ones count when at least ``lacuna_min_volume_um3`` large. Like the ground truth,
a lacuna counts when its centre lies in the volume: a piece cut by a face counts when it
reaches at least half the median extent of the complete lacunae along that axis.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .euler import connectivity_density
from .labels import Code, bone_tissue
from .thickness import local_thickness

UM3_PER_MM3 = 1e9
FULL_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class MorphometrySettings:
    """What counts as a lacuna, and the bin width of local thickness (voxels)."""

    lacuna_min_volume_um3: float = 50.0
    lacuna_min_thickness_um: float = 1.5
    thickness_step_voxels: float = 0.25


@dataclass(frozen=True)
class Lacunae:
    """Lacunae found in the volume (volumes and thicknesses of those wholly inside it)."""

    count: int
    """Lacunae whose centre lies in the volume (complete ones, and cut ones reaching past their middle)."""
    pieces: int
    """Complete lacunae plus every piece cut by a face."""
    density_per_mm3: float
    """Count per mm^3 of bone tissue."""
    volumes_um3: list[float]
    thickness_um: list[float]
    """Per complete lacuna: mean local thickness of its voxels."""

    @property
    def mean_volume_um3(self) -> float:
        return float(np.mean(self.volumes_um3)) if self.volumes_um3 else float("nan")


@dataclass(frozen=True)
class Morphometry:
    """Everything ``nanoscope morphometry`` reports (um, mm^3, 1/mm, 1/mm^3)."""

    voxel_size_um: float
    bone_tissue_mm3: float
    lcn_mm3: float
    porosity: float
    lacunae: Lacunae
    tv_mm3: float
    bv_mm3: float
    bv_tv: float
    ct_th_um: float
    tb_tv_mm3: float
    tb_bv_tv: float | None
    tb_th_um: float | None
    tb_sp_um: float | None
    tb_n_per_mm: float | None
    conn_d_per_mm3: float | None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["lacunae"]["mean_volume_um3"] = self.lacunae.mean_volume_um3
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_number)

    def table(self) -> str:
        """A two-column human-readable table (the per-lacuna lists are summarised)."""
        lac = self.lacunae
        thickness = float(np.mean(lac.thickness_um)) if lac.thickness_um else float("nan")
        rows = [
            ("voxel size", f"{self.voxel_size_um:.4g} um"),
            ("bone tissue volume", f"{self.bone_tissue_mm3:.6g} mm^3"),
            ("LCN volume", f"{self.lcn_mm3:.6g} mm^3"),
            ("porosity (LCN / bone)", f"{100 * self.porosity:.3f} %"),
            ("lacunae (centre in volume)", f"{lac.count}  ({lac.pieces} pieces)"),
            ("lacuna density", f"{lac.density_per_mm3:.4g} /mm^3 bone"),
            ("lacuna volume (mean)", f"{lac.mean_volume_um3:.4g} um^3"),
            ("lacuna thickness (mean)", f"{thickness:.3g} um"),
            ("TV", f"{self.tv_mm3:.6g} mm^3"),
            ("BV/TV", f"{self.bv_tv:.4f}"),
            ("Ct.Th", f"{self.ct_th_um:.4g} um"),
            ("Tb.BV/TV", _fmt(self.tb_bv_tv, "")),
            ("Tb.Th", _fmt(self.tb_th_um, " um")),
            ("Tb.Sp", _fmt(self.tb_sp_um, " um")),
            ("Tb.N", _fmt(self.tb_n_per_mm, " /mm")),
            ("Conn.D", _fmt(self.conn_d_per_mm3, " /mm^3")),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _fmt(value: float | None, unit: str) -> str:
    return "n/a (no trabecular bone)" if value is None else f"{value:.4g}{unit}"


def _json_number(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def morphometry(labels: np.ndarray, voxel_size_um: float,
                settings: MorphometrySettings = MorphometrySettings()) -> Morphometry:
    """All figures of a labels volume (DESIGN.md codes) with voxels of ``voxel_size_um``."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"morphometry needs a 3-D z-y-x labels volume, got shape {labels.shape}")
    if voxel_size_um <= 0:
        raise ValueError(f"voxel_size_um must be > 0, got {voxel_size_um}")
    voxel_mm3 = (voxel_size_um * 1e-3) ** 3
    tissue = bone_tissue(labels)
    if not tissue.any():
        raise ValueError("the labels volume holds no bone (codes 2, 3 or 5): nothing to measure")
    lcn = labels == Code.LCN
    tissue_mm3 = tissue.sum() * voxel_mm3
    lcn_mm3 = lcn.sum() * voxel_mm3
    lacunae = find_lacunae(lcn, voxel_size_um, tissue_mm3, settings)
    step = settings.thickness_step_voxels
    cortex, marrow, envelope = compartments(tissue)
    trabecular = tissue & marrow
    tv_mm3 = envelope.sum() * voxel_mm3
    ct_th = _mean_thickness(cortex, step) * voxel_size_um
    tb_tv_mm3 = marrow.sum() * voxel_mm3
    tb = dict.fromkeys(("tb_bv_tv", "tb_th_um", "tb_sp_um", "tb_n_per_mm", "conn_d_per_mm3"))
    if trabecular.any() and tb_tv_mm3 > 0:
        tb_th = _mean_thickness(trabecular, step) * voxel_size_um
        tb_sp = _mean_thickness(marrow & ~trabecular, step) * voxel_size_um
        tb.update(tb_bv_tv=float(trabecular.sum() * voxel_mm3 / tb_tv_mm3), tb_th_um=tb_th, tb_sp_um=tb_sp,
                  tb_n_per_mm=1e3 / (tb_th + tb_sp), conn_d_per_mm3=connectivity_density(trabecular, tb_tv_mm3))
    return Morphometry(
        voxel_size_um=float(voxel_size_um), bone_tissue_mm3=float(tissue_mm3), lcn_mm3=float(lcn_mm3),
        porosity=float(lcn_mm3 / tissue_mm3), lacunae=lacunae, tv_mm3=float(tv_mm3), bv_mm3=float(tissue_mm3),
        bv_tv=float(tissue_mm3 / tv_mm3) if tv_mm3 > 0 else float("nan"), ct_th_um=float(ct_th),
        tb_tv_mm3=float(tb_tv_mm3), **tb,
    )


def _mean_thickness(mask: np.ndarray, step: float) -> float:
    if not mask.any():
        return float("nan")
    return float(local_thickness(mask, step)[mask].mean())


def compartments(tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(solid cortex, marrow cavity, periosteal envelope) masks of a bone tissue mask (see module doc)."""
    pieces, count = ndimage.label(tissue, structure=FULL_26)
    if count == 0:
        empty = np.zeros_like(tissue, dtype=bool)
        return empty, empty, empty
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    return slice_compartments(pieces == int(np.argmax(sizes)))


def slice_compartments(cortex: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(solid cortex, marrow cavity, periosteal envelope) of the largest piece of bone tissue ``cortex``, slice by
    slice (each z slice on its own: a slab of slices gives the volume's)."""
    envelope = np.zeros_like(cortex)
    marrow = np.zeros_like(cortex)
    for k in range(cortex.shape[0]):
        envelope[k] = ndimage.binary_fill_holes(cortex[k])
        holes, n = ndimage.label(envelope[k] & ~cortex[k])
        if n:
            areas = np.bincount(holes.ravel())
            areas[0] = 0
            marrow[k] = holes == int(np.argmax(areas))
    return envelope & ~marrow, marrow, envelope


def find_lacunae(lcn: np.ndarray, voxel_size_um: float, tissue_mm3: float,
                 settings: MorphometrySettings) -> Lacunae:
    """Lacunae among the LCN voxels: thick enough, large enough, counted when their centre is in the volume."""
    thickness = local_thickness(lcn, settings.thickness_step_voxels) * voxel_size_um
    cores, count = ndimage.label(lcn & (thickness >= settings.lacuna_min_thickness_um), structure=FULL_26)
    if count == 0:
        return Lacunae(0, 0, 0.0, [], [])
    # Give back each core the thin rim voxels the thickness threshold took off (and no more).
    distance, nearest = ndimage.distance_transform_edt(cores == 0, return_indices=True)
    reach = settings.lacuna_min_thickness_um / voxel_size_um / 2 + 1
    pieces = np.where(lcn & (distance <= reach), cores[tuple(nearest)], 0)
    index = np.arange(1, count + 1)
    volumes = ndimage.sum_labels(np.ones_like(pieces), pieces, index) * voxel_size_um**3
    extents = np.array([[s.stop - s.start for s in box] for box in ndimage.find_objects(pieces, count)])
    low, high = _touching(pieces, count, low=True), _touching(pieces, count, low=False)
    cut = low | high
    complete = ~cut.any(axis=1) & (volumes >= settings.lacuna_min_volume_um3)
    counted = complete.copy()
    if complete.any():
        half_length = np.median(extents[complete], axis=0) / 2
        counted |= cut.any(axis=1) & np.all(~cut | (extents >= half_length), axis=1)
    mean_thickness = ndimage.mean(thickness, pieces, index)
    return Lacunae(
        count=int(np.count_nonzero(counted)), pieces=int(np.count_nonzero(complete | cut.any(axis=1))),
        density_per_mm3=float(np.count_nonzero(counted) / tissue_mm3) if tissue_mm3 > 0 else 0.0,
        volumes_um3=[float(v) for v in volumes[complete]],
        thickness_um=[float(t) for t in mean_thickness[complete]],
    )


def _touching(pieces: np.ndarray, count: int, low: bool) -> np.ndarray:
    """(count, ndim): does piece 1..count touch the low (or high) face of each axis?"""
    touch = np.zeros((count + 1, pieces.ndim), dtype=bool)
    for axis in range(pieces.ndim):
        face = np.take(pieces, 0 if low else -1, axis=axis)
        touch[np.unique(face), axis] = True
    return touch[1:]
