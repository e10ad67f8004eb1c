"""Bone remodelling between imaging sessions of one animal: from each session's volumes to rates.

A session's volume is the mean of its tomograms' reconstructions (the online ones: the
centre of rotation the instrument knows; a time series of an unchanging bone averages its
noise down). Its bone is segmented as absorption micro-CT usually is (a Gaussian filter,
then one global threshold: Otsu's, as the bone is the one bright phase against soft
tissue and air), and pores in the cortex as voxels whose bone fraction (apposition.py),
lightly smoothed, stays below ``PORE_FRACTION``. The follow-up is compared with the
baseline by remodeling.py, with sub-voxel formed volumes from the grey values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..volume_files import Volume, read_volume
from .apposition import bone_fraction, grey_levels
from .labels import Code
from .metrics import otsu_threshold
from .morphometry import compartments
from .remodeling import Remodeling, remodeling

BONE_FILTER_SIGMA_VOXELS = 1.5
"""Gaussian filter before the threshold: 5 ms in-vivo projections leave a voxel's noise above
the bone / soft-tissue contrast; at 1.5 voxels the tiny leg's bone Dice against the
ground truth was 0.94 (0.90 at 1 voxel, measured on the demo's scans)."""
PORE_FILTER_SIGMA_VOXELS = 0.7
PORE_FRACTION = 0.3
"""A cortex voxel is pore when its smoothed bone fraction is below this. On the demo's scans the lacunae lie
below the resolution and what it finds is noise (2-3 % of its voxels on a true pore;
benchmarks/bench_lacuna_visibility.py); on sharper, quieter scans it finds them."""
PORE_DEPTH_VOXELS = 2
"""Pores are looked for this far inside the cortex (the surfaces' blur reads as pore)."""


def bone_labels(volume: np.ndarray, sigma_voxels: float = BONE_FILTER_SIGMA_VOXELS) -> np.ndarray:
    """Labels (background 0, bone 2) of an absorption volume: Gaussian filter, then Otsu's threshold."""
    smooth = ndimage.gaussian_filter(np.asarray(volume, np.float32), sigma_voxels)
    return np.where(smooth > otsu_threshold(smooth), Code.BONE, Code.BACKGROUND).astype(np.uint8)


def bone_and_pore_labels(volume: np.ndarray) -> np.ndarray:
    """Labels (background 0, bone 2, LCN/pore 3): bone_labels, then the dark voxels inside its cortex."""
    labels = bone_labels(volume)
    cortex, marrow, envelope = compartments(labels == Code.BONE)
    fraction = bone_fraction(volume, grey_levels(volume, cortex, envelope, marrow), envelope, marrow)
    inside = ndimage.binary_erosion(cortex, iterations=PORE_DEPTH_VOXELS)
    labels[inside & (ndimage.gaussian_filter(fraction, PORE_FILTER_SIGMA_VOXELS) < PORE_FRACTION)] = Code.LCN
    return labels


@dataclass(frozen=True)
class Session:
    """One session: its study day, its volume (mean of its tomograms) and that volume's labels."""

    day: float
    volume: Volume
    labels: Volume


def session_from_volumes(day: float, paths: Sequence[str | Path]) -> Session:
    """The session of ``day`` from its tomograms' volume files (same grid): their mean, segmented."""
    if not paths:
        raise ValueError(f"the session of day {day:g} has no volume file")
    volumes = [read_volume(path) for path in paths]
    if len({v.data.shape for v in volumes}) > 1:
        raise ValueError(f"the volumes of day {day:g} differ in shape; reconstruct them on one grid")
    mean = np.mean([v.data for v in volumes], axis=0, dtype=np.float32)
    voxel = volumes[0].voxel_size_um
    provenance = {"generator": "nanoscope_daq.analysis.longitudinal", "volumes": [str(p) for p in paths],
                  "study_day": day}
    labels = Volume(bone_and_pore_labels(mean), voxel, {
        **provenance, "method": f"bone: Gaussian sigma {BONE_FILTER_SIGMA_VOXELS} voxels, Otsu threshold; "
                                f"pores: bone fraction < {PORE_FRACTION} after Gaussian sigma "
                                f"{PORE_FILTER_SIGMA_VOXELS} voxels, {PORE_DEPTH_VOXELS} voxels inside the cortex"})
    return Session(day, Volume(mean, voxel, {**provenance, "method": "mean of the session's tomograms"}), labels)


def remodeling_between(baseline: Session, followup: Session, register: bool = True) -> Remodeling:
    """Remodelling from ``baseline`` to ``followup`` (a later day), formed volumes from the grey values."""
    days = followup.day - baseline.day
    if days <= 0:
        raise ValueError(f"the follow-up (day {followup.day:g}) must come after the baseline (day {baseline.day:g})")
    if baseline.volume.data.shape != followup.volume.data.shape:
        raise ValueError(f"the sessions' volumes differ in shape ({baseline.volume.data.shape} vs "
                         f"{followup.volume.data.shape}); scan both with the same binning and detector region")
    # Registered on the bone: pores found at in-vivo noise are a third noise, no landmarks (on the demo's scans the
    # registration on them diverged); remodelling fills them into the bone anyway.
    before, after = (np.where(s.labels.data == Code.LCN, Code.BONE, s.labels.data).astype(np.uint8)
                     for s in (baseline, followup))
    return remodeling(before, after, baseline.volume.voxel_size_um, days, register=register,
                      volumes=(baseline.volume.data, followup.volume.data))
