"""Sub-voxel bone formation from grey values: the formed volume integrated, over the surface it covers.

Counting thresholded voxels moves every surface by whole voxels, and on noisy in-vivo
scans the smoothing that makes a threshold work also rounds the surfaces and shifts
them by an amount that depends on the threshold and the curvature. A linear
reconstruction keeps the integral of attenuation under blur (detector, breathing, the
smoothing filter), and its noise has zero mean. So the bone fraction of each voxel,
``f = (g - background) / (bone - background)``, summed over a region that holds a whole
moving surface, gives the bone volume there without a threshold's bias: the bone formed
on a surface is the sum of ``f_after - f_before`` around the formed clusters that the
segmentation found (remodeling.py), and the mineral apposition rate is that volume over
the mean of the surface's areas before and after, per day. For a surface moved by ``p``
along its normal (a cylinder's wall, either side) the formed volume is ``p`` times the
mean of the two areas, to second order in ``p``.

The grey levels come from the volume itself, on each side of the cortex: bone is the
median of a shell of the cortex just below the surface (pores are a few per cent of it),
the background the median of the soft tissue just outside the bone, or of the marrow. Areas are those
of a marching-cubes mesh of the segmentation's solid bone, smoothed by one voxel, counted
where its faces lie in the region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import measure

CALIBRATION_MARGIN_VOXELS = 5
"""Grey levels are taken this far from any bone surface (out of the blur of the edges)."""
REGION_MARGIN_VOXELS = 5
"""The region of a formed cluster reaches this far around it: the blurred edges of both surfaces."""
MESH_SMOOTHING_VOXELS = 1.0


class NoGreyLevels(ValueError):
    """The volume has no cortex or soft tissue thick enough to read the bone's and background's grey levels."""


@dataclass(frozen=True)
class GreyLevels:
    """The grey levels of one volume that make its bone fraction (volume units), on either side of the cortex."""

    periosteal_bone: float
    soft_tissue: float
    endosteal_bone: float
    marrow: float


def _sides(envelope: np.ndarray, marrow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (voxels) below the periosteal surface, height above the endosteal one, and the periosteal side."""
    below_periosteum = ndimage.distance_transform_edt(envelope) - ndimage.distance_transform_edt(~envelope)
    if not marrow.any():
        return below_periosteum, np.full(marrow.shape, np.inf), np.ones(marrow.shape, bool)
    above_endosteum = ndimage.distance_transform_edt(~marrow) - ndimage.distance_transform_edt(marrow)
    return below_periosteum, above_endosteum, below_periosteum <= above_endosteum


def grey_levels(volume: np.ndarray, solid: np.ndarray, envelope: np.ndarray, marrow: np.ndarray) -> GreyLevels:
    """Bone and background levels next to either surface of the cortex, from the volume's own segmentation.

    Bone is read in a shell of the cortex ``CALIBRATION_MARGIN_VOXELS`` to twice that
    below each surface: where the bone formed next to it lies (a reconstruction's bone
    level drifts with depth: cupping, its filter's low frequencies)."""
    m = CALIBRATION_MARGIN_VOXELS
    below, above, periosteal = _sides(envelope, marrow)
    shells = {"periosteal_bone": solid & periosteal & (below >= m) & (below < 2 * m),
              "endosteal_bone": solid & ~periosteal & (above >= m) & (above < 2 * m),
              "soft_tissue": (below <= -m) & (below > -4 * m), "marrow": marrow & (above <= -m)}
    if not shells["periosteal_bone"].any() or not shells["soft_tissue"].any():
        raise NoGreyLevels("the bone is too thin or fills the volume: no cortex or soft tissue to calibrate on")
    levels = {name: float(np.median(volume[shell])) if shell.any() else None for name, shell in shells.items()}
    levels["endosteal_bone"] = levels["endosteal_bone"] if levels["endosteal_bone"] is not None \
        else levels["periosteal_bone"]
    levels["marrow"] = levels["marrow"] if levels["marrow"] is not None else levels["soft_tissue"]
    return GreyLevels(**levels)


def bone_fraction(volume: np.ndarray, levels: GreyLevels, envelope: np.ndarray, marrow: np.ndarray) -> np.ndarray:
    """Bone fraction of each voxel (not clipped: noise must average out), with the levels of its side of the cortex."""
    periosteal = _sides(envelope, marrow)[2]
    bone = np.where(periosteal, np.float32(levels.periosteal_bone), np.float32(levels.endosteal_bone))
    background = np.where(periosteal, np.float32(levels.soft_tissue), np.float32(levels.marrow))
    return ((np.asarray(volume, np.float32) - background) / (bone - background)).astype(np.float32)


def surface_area_mm2(solid: np.ndarray, region: np.ndarray, voxel_size_um: float) -> float:
    """Area of the surface of ``solid`` where its mesh's faces lie in ``region``."""
    if not solid.any() or solid.all():
        return 0.0
    smooth = ndimage.gaussian_filter(solid.astype(np.float32), MESH_SMOOTHING_VOXELS)
    vertices, faces, _, _ = measure.marching_cubes(smooth, 0.5)
    centres = np.clip(np.rint(vertices[faces].mean(axis=1)).astype(int), 0, np.asarray(solid.shape) - 1)
    inside = region[tuple(centres.T)]
    return float(measure.mesh_surface_area(vertices, faces[inside]) * (voxel_size_um * 1e-3) ** 2)


def formed_volume_mm3(before_fraction: np.ndarray, after_fraction: np.ndarray, region: np.ndarray,
                      voxel_size_um: float) -> float:
    """Bone gained in ``region`` from the first fraction field to the second."""
    gained = float(np.sum(after_fraction[region], dtype=np.float64) - np.sum(before_fraction[region], dtype=np.float64))
    return gained * (voxel_size_um * 1e-3) ** 3


def formation_region(formed: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """The formed clusters with the blurred edges of both surfaces around them."""
    return ndimage.binary_dilation(formed, iterations=REGION_MARGIN_VOXELS) & overlap
