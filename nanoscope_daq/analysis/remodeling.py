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

* BFR, BRR: formed, resorbed volume / baseline bone volume / day;
* MAR: mean local thickness of the formed bone / days (also split into periosteal and
  endosteal formation: outside or inside the baseline's periosteal envelope);
* MRR: mean depth of the resorption cavities / days (depth of a cavity: the largest
  distance of its voxel centres from the nearest baseline non-bone voxel centre: half a
  voxel too deep at the surface, half a voxel too shallow at the bottom);
* MS/BS, ES/BS: fraction of the baseline bone surface that formed bone covers, that
  resorption removed (also given per day).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .labels import Code, bone_tissue
from .morphometry import FULL_26, compartments
from .registration import RigidTransform, rigid_register
from .thickness import local_thickness

MIN_PORE_FRACTION = 1e-3
"""Register on the pores when they fill at least this fraction of the bone, else on the bone."""


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
               thickness_step: float = 0.25) -> Remodeling:
    """Remodelling from the ``baseline`` labels to the ``followup`` labels ``days`` later (same grid shape)."""
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
    overlap = transform.resample(np.ones(before.shape, np.float32), order=0) > 0.5
    overlap = ndimage.binary_erosion(overlap, iterations=2)  # interpolation edge
    before &= overlap
    after &= overlap
    formed = _clusters(after & ~before, min_cluster_voxels)
    resorbed = _clusters(before & ~after, min_cluster_voxels)
    quiescent = before & after
    voxel_mm3 = (voxel_size_um * 1e-3) ** 3
    bv = before.sum() * voxel_mm3
    if bv == 0:
        raise ValueError("the baseline holds no bone where the two time points overlap: nothing to compare")
    surface = before & ~ndimage.binary_erosion(before) & ndimage.binary_erosion(overlap)
    thickness = local_thickness(formed, thickness_step) * voxel_size_um
    envelope = compartments(before)[2]
    periosteal = formed & ~envelope
    endosteal = formed & envelope
    return Remodeling(
        days=float(days), voxel_size_um=float(voxel_size_um), transform=transform, baseline_bv_mm3=float(bv),
        formed_mm3=float(formed.sum() * voxel_mm3), resorbed_mm3=float(resorbed.sum() * voxel_mm3),
        quiescent_mm3=float(quiescent.sum() * voxel_mm3),
        bfr_per_day=float(formed.sum() * voxel_mm3 / bv / days),
        brr_per_day=float(resorbed.sum() * voxel_mm3 / bv / days),
        mar_um_per_day=_mean(thickness, formed) / days,
        mar_periosteal_um_per_day=_mean(thickness, periosteal) / days,
        mar_endosteal_um_per_day=_mean(thickness, endosteal) / days,
        mrr_um_per_day=_cavity_depth(before, resorbed, voxel_size_um) / days,
        ms_bs=_fraction(surface, ndimage.binary_dilation(formed)),
        es_bs=_fraction(surface, resorbed),
    )


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


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else 0.0


def _fraction(surface: np.ndarray, covered: np.ndarray) -> float:
    total = surface.sum()
    return float((surface & covered).sum() / total) if total else 0.0


def _cavity_depth(before: np.ndarray, resorbed: np.ndarray, voxel_size_um: float) -> float:
    """Mean over resorption cavities of their largest depth below the baseline surface (um)."""
    pieces, count = ndimage.label(resorbed, structure=FULL_26)
    if count == 0:
        return 0.0
    depth = ndimage.distance_transform_edt(before) * voxel_size_um
    return float(np.mean(ndimage.maximum(depth, pieces, np.arange(1, count + 1))))
