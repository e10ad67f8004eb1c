"""4D bone remodelling between two time points: registration, formed / resorbed / quiescent bone, rates.

The follow-up is registered rigidly to the baseline (registration.py) on the pores inside
the bone (lacunae and canals: landmarks that remodelling leaves in place, where the bone
surfaces themselves move and a grown ring fits a smaller one in many positions), or on
the bone itself when it holds too few pores; the follow-up's bone is then resampled onto
the baseline's grid; where the two overlap, bone only in the follow-up is formed,
bone only in the baseline is resorbed, bone in both is quiescent; clusters smaller than
``min_cluster_voxels`` are noise and dropped (Schulte et al., Bone 48:433, 2011).

Rates (Schulte et al. 2011; dynamic histomorphometry names of Dempster et al., JBMR
28:2, 2013), over the interval of ``days``:

* BFR, BRR: formed (sub-voxel, as MAR), resorbed volume / baseline bone volume / day. A
  resorption cavity of the labels is grown, by up to ``RIM_VOXELS``, through the voxels
  whose bone fraction of the grey values falls from >= 0.5 to < 0.5: Otsu's threshold lies
  below the half level (0.42-0.45 of the way from soft tissue to bone), so the labels draw
  each cavity without its rim (61 % of the cavities' voxels on the simulated cohort);
* MAR: formed volume / mean area of the surface it covers (before and after) / days, with
  sub-voxel volumes (apposition.py): from the bone fraction of the grey values when the
  reconstructed volumes are given, else from the labels; also split into periosteal and
  endosteal formation: outside or inside the baseline's periosteal envelope; a specimen
  too small to read its grey levels from (no cortex or no soft tissue) falls back to the
  labels, and ``formed_volumes_from`` says which was used. Formation
  next to a resorption cavity is left out of MAR and counted by voxels in BFR (the
  cavity's loss would cancel its grey values);
* MRR: mean depth of the resorption cavities / days (depth of a cavity: the largest
  distance of its voxel centres from the nearest baseline non-bone voxel centre: half a
  voxel too deep at the surface, half a voxel too shallow at the bottom);
* MS/BS, ES/BS: fraction of the baseline bone surface that formed bone covers, that
  resorption removed (also given per day).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import apposition as grey
from .labels import Code, bone_tissue
from .morphometry import FULL_26, compartments
from .registration import RigidTransform, rigid_register

MIN_PORE_FRACTION = 1e-3
"""Register on the pores when they fill at least this fraction of the bone, else on the bone."""

RIM_VOXELS = 3
"""How far a cavity of the labels grows into its rim at the grey values' half level (the simulated cohort's
BRR is the same with 2, 3 and 5: the growth stops at the cavity's wall)."""


@dataclass(frozen=True)
class Remodeling:
    """Volumes (mm^3), rates per day and the registration of one interval."""

    days: float
    voxel_size_um: float
    transform: RigidTransform
    baseline_bv_mm3: float
    formed_mm3: float
    resorbed_mm3: float
    quiescent_mm3: float
    bfr_per_day: float
    brr_per_day: float
    mar_um_per_day: float
    mar_periosteal_um_per_day: float
    mar_endosteal_um_per_day: float
    mrr_um_per_day: float
    ms_bs: float
    es_bs: float
    formed_volumes_from: str
    """Where the sub-voxel formed volumes came from: the grey values, or the labels' voxels and why."""

    @property
    def ms_bs_per_day(self) -> float:
        return self.ms_bs / self.days

    @property
    def es_bs_per_day(self) -> float:
        return self.es_bs / self.days

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(ms_bs_per_day=self.ms_bs_per_day, es_bs_per_day=self.es_bs_per_day)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def remodeling(baseline: np.ndarray, followup: np.ndarray, voxel_size_um: float, days: float,
               register: bool = True, min_cluster_voxels: int = 5,
               volumes: tuple[np.ndarray, np.ndarray] | None = None) -> Remodeling:
    """Remodelling from the ``baseline`` labels to the ``followup`` labels ``days`` later (same grid shape).

    ``volumes``: the reconstructed volumes the labels were segmented from (baseline, follow-up);
    formed volumes then come from their grey values (apposition.py), else from the labels.
    """
    if days <= 0:
        raise ValueError(f"the interval between time points must be > 0 days, got {days}")
    if baseline.shape != followup.shape:
        raise ValueError(f"baseline {baseline.shape} and follow-up {followup.shape} must have the same shape")
    before = _solid(bone_tissue(baseline))
    after_raw = _solid(bone_tissue(followup)).astype(np.float32)
    centre = tuple(float(c) for c in (np.asarray(before.shape) - 1) / 2)
    transform = RigidTransform((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), centre)
    if register:
        pores = _pores(baseline, before), _pores(followup, after_raw > 0)
        use_pores = min(p.sum() for p in pores) >= MIN_PORE_FRACTION * before.sum()
        transform = rigid_register(*pores) if use_pores else rigid_register(before, after_raw)
    after = transform.resample(after_raw) >= 0.5
    overlap = _overlap(transform, before.shape)
    before &= overlap
    after &= overlap
    formed = _clusters(after & ~before, min_cluster_voxels)
    resorbed = _clusters(before & ~after, min_cluster_voxels)
    voxel_mm3 = (voxel_size_um * 1e-3) ** 3
    bv = before.sum() * voxel_mm3
    if bv == 0:
        raise ValueError("the baseline holds no bone where the two time points overlap: nothing to compare")
    surface = before & ~ndimage.binary_erosion(before) & ndimage.binary_erosion(overlap)
    envelope = compartments(before)[2]
    *fractions, formed_from = _fractions(baseline, followup, before, after_raw > 0, transform, volumes)
    resorbed = _cavities_to_half_level(resorbed, before, *fractions)
    quiescent = before & after & ~resorbed
    # Formation next to a cavity is counted by voxels (the cavity's loss would cancel its grey values) and left
    # out of MAR, as are the faces where the overlap cuts the bone (no bone surface).
    margin = grey.REGION_MARGIN_VOXELS
    near_cavity = ndimage.binary_dilation(resorbed, iterations=2 * margin)
    formed_mm3 = (grey.formed_volume_mm3(*fractions, grey.formation_region(formed, overlap & ~near_cavity),
                                         voxel_size_um) + (formed & near_cavity).sum() * voxel_mm3)
    interior = ndimage.binary_erosion(overlap, iterations=margin + 1) & ~near_cavity
    apposition = {}
    for name, side in (("periosteal", ~envelope), ("endosteal", envelope)):
        region = grey.formation_region(formed & side, interior)
        area = sum(grey.surface_area_mm2(solid, region, voxel_size_um) for solid in (before, after)) / 2
        apposition[name] = (grey.formed_volume_mm3(*fractions, region, voxel_size_um), area)
    surface_mm2 = sum(a for _, a in apposition.values())
    apposed_mm3 = sum(v for v, _ in apposition.values())
    return Remodeling(
        days=float(days), voxel_size_um=float(voxel_size_um), transform=transform, baseline_bv_mm3=float(bv),
        formed_mm3=float(formed_mm3), resorbed_mm3=float(resorbed.sum() * voxel_mm3),
        quiescent_mm3=float(quiescent.sum() * voxel_mm3),
        bfr_per_day=float(formed_mm3 / bv / days),
        brr_per_day=float(resorbed.sum() * voxel_mm3 / bv / days),
        mar_um_per_day=_rate_um(apposed_mm3, surface_mm2, days),
        mar_periosteal_um_per_day=_rate_um(*apposition["periosteal"], days),
        mar_endosteal_um_per_day=_rate_um(*apposition["endosteal"], days),
        mrr_um_per_day=_cavity_depth(before, resorbed, voxel_size_um) / days,
        ms_bs=_fraction(surface, ndimage.binary_dilation(formed)),
        es_bs=_fraction(surface, resorbed),
        formed_volumes_from=formed_from,
    )


def _overlap(transform: RigidTransform, shape: tuple[int, ...]) -> np.ndarray:
    """Where the follow-up, through ``transform``, covers the baseline's grid (less the interpolation edge)."""
    return ndimage.binary_erosion(transform.resample(np.ones(shape, np.float32), order=0) > 0.5, iterations=2)


def _pores(labels: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """Lacunae and canals inside the bone: the registration's landmarks."""
    return (solid & ((labels == Code.LCN) | (labels == Code.VESSEL))).astype(np.float32)


def _solid(tissue: np.ndarray) -> np.ndarray:
    """Bone tissue with the small pores and canals inside the cortex filled (lacunae are not remodelling)."""
    cortex, _, _ = compartments(tissue)
    return tissue | cortex


def _clusters(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    pieces, count = ndimage.label(mask, structure=FULL_26)
    if count == 0:
        return mask
    sizes = np.bincount(pieces.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[pieces]


def _fractions(baseline: np.ndarray, followup: np.ndarray, before: np.ndarray, after: np.ndarray,
               transform: RigidTransform, volumes: tuple[np.ndarray, np.ndarray] | None
               ) -> tuple[np.ndarray, np.ndarray, str]:
    """Bone fraction of both time points on the baseline's grid and where it came from: the grey values when
    ``volumes`` are given and their grey levels can be read, else the solid bone of the labels."""
    from_labels = before.astype(np.float32), transform.resample(after.astype(np.float32))
    if volumes is None:
        return (*from_labels, "the labels' voxels: no reconstructions given")
    fractions = []
    for volume, solid in zip(volumes, (before, after)):
        if volume.shape != baseline.shape:
            raise ValueError(f"volume {volume.shape} and labels {baseline.shape} must have the same shape")
        _, marrow, envelope = compartments(solid)
        try:
            levels = grey.grey_levels(volume, solid, envelope, marrow)
        except grey.NoGreyLevels as exc:
            return (*from_labels, f"the labels' voxels: no grey levels to read ({exc})")
        fractions.append(grey.bone_fraction(volume, levels, envelope, marrow))
    return fractions[0], transform.resample(fractions[1]), "the grey values of the two reconstructions (sub-voxel)"


def _rate_um(volume_mm3: float, area_mm2: float, days: float) -> float:
    """Apposition (um/day) of ``volume_mm3`` spread over ``area_mm2`` in ``days``."""
    return 1e3 * volume_mm3 / area_mm2 / days if area_mm2 > 0 else 0.0


def _fraction(surface: np.ndarray, covered: np.ndarray) -> float:
    total = surface.sum()
    return float((surface & covered).sum() / total) if total else 0.0


def _cavities_to_half_level(resorbed: np.ndarray, before: np.ndarray, fraction_before: np.ndarray,
                            fraction_after: np.ndarray) -> np.ndarray:
    """The cavities grown through the baseline's bone whose fraction falls from >= 0.5 to < 0.5 (unchanged when
    the fractions are the labels' own)."""
    lost = before & (fraction_before >= 0.5) & (fraction_after < 0.5)
    return ndimage.binary_dilation(resorbed, iterations=RIM_VOXELS, mask=resorbed | lost)


def _cavity_depth(before: np.ndarray, resorbed: np.ndarray, voxel_size_um: float) -> float:
    """Mean over resorption cavities of their largest depth below the baseline surface (um)."""
    pieces, count = ndimage.label(resorbed, structure=FULL_26)
    if count == 0:
        return 0.0
    depth = ndimage.distance_transform_edt(before) * voxel_size_um
    return float(np.mean(ndimage.maximum(depth, pieces, np.arange(1, count + 1))))


class Change(enum.IntEnum):
    """Codes of a remodelling map."""

    NONE = 0
    QUIESCENT = 1
    FORMED = 2
    RESORBED = 3


def change_map(baseline: np.ndarray, followup: np.ndarray, transform: RigidTransform) -> np.ndarray:
    """Quiescent, formed and resorbed bone (Change codes, uint8) on the baseline's grid, the follow-up through
    ``transform`` (a Remodeling's)."""
    before = _solid(bone_tissue(baseline))
    after = transform.resample(_solid(bone_tissue(followup)).astype(np.float32)) >= 0.5
    out = np.full(before.shape, Change.NONE, np.uint8)
    overlap = _overlap(transform, before.shape)
    before &= overlap
    after &= overlap
    out[before & after] = Change.QUIESCENT
    out[after & ~before] = Change.FORMED
    out[before & ~after] = Change.RESORBED
    return out
