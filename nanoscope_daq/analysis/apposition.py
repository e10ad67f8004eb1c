"""Sub-voxel bone volumes from grey values: the formed volume over the surface it covers, and the porosity.

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
the background the median of the soft tissue just outside the bone, or of the marrow. Areas
are those of a marching-cubes mesh of the segmentation's solid bone, smoothed by one voxel,
counted where its faces lie in the region.

The cortical porosity is 1 - the mean bone fraction of the cortex ``POROSITY_DEPTH_VOXELS``
in from its surfaces (out of their blur): every pore counts by its volume, lacunae and
canals below the resolution included, where a threshold finds only the pores it resolves.
Its bone level is the matrix's (:func:`matrix_level`), not the shell's median: the pores,
blurred, spread values below the matrix that pull a median down, the more the more porous
the bone (a median read the simulated cohort's porosity 30-55 % low).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize
from skimage import measure

CALIBRATION_MARGIN_VOXELS = 5
"""Grey levels are taken this far from any bone surface (out of the blur of the edges)."""
REGION_MARGIN_VOXELS = 5
"""The region of a formed cluster reaches this far around it: the blurred edges of both surfaces."""
MESH_SMOOTHING_VOXELS = 1.0
POROSITY_DEPTH_VOXELS = 3
"""The cortical porosity is measured this far in from the cortex's surfaces."""


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


def grey_levels(volume: np.ndarray, solid: np.ndarray, envelope: np.ndarray, marrow: np.ndarray,
                bone_level: Callable[[np.ndarray], float] = np.median) -> GreyLevels:
    """Bone and background levels next to either surface of the cortex, from the volume's own segmentation.

    Bone is read in a shell of the cortex ``CALIBRATION_MARGIN_VOXELS`` to twice that
    below each surface: where the bone formed next to it lies (a reconstruction's bone
    level drifts with depth: cupping, its filter's low frequencies); ``bone_level`` of the
    shell's values (the formed volumes: the median; the porosity: :func:`matrix_level`)."""
    m = CALIBRATION_MARGIN_VOXELS
    below, above, periosteal = _sides(envelope, marrow)
    shells = {"periosteal_bone": solid & periosteal & (below >= m) & (below < 2 * m),
              "endosteal_bone": solid & ~periosteal & (above >= m) & (above < 2 * m),
              "soft_tissue": (below <= -m) & (below > -4 * m), "marrow": marrow & (above <= -m)}
    if not shells["periosteal_bone"].any() or not shells["soft_tissue"].any():
        raise NoGreyLevels("the bone is too thin or fills the volume: no cortex or soft tissue to calibrate on")
    levels = {name: (bone_level if name.endswith("bone") else np.median)(volume[shell]) if shell.any() else None
              for name, shell in shells.items()}
    levels = {name: None if level is None else float(level) for name, level in levels.items()}
    levels["endosteal_bone"] = levels["endosteal_bone"] if levels["endosteal_bone"] is not None \
        else levels["periosteal_bone"]
    levels["marrow"] = levels["marrow"] if levels["marrow"] is not None else levels["soft_tissue"]
    return GreyLevels(**levels)


def matrix_level(values: np.ndarray) -> float:
    """The bone matrix's level among ``values`` of porous bone: the level whose values above look like the upper
    half of a normal distribution centred on it (the noise about the matrix; pores, blurred, only add values
    below it, which pull a median or a histogram's smoothed peak down)."""
    shell = np.asarray(values, np.float64)

    def excess_shape(level: float) -> float:
        excess = shell[shell > level] - level
        return float(excess.mean() / np.sqrt(np.mean(excess * excess))) - np.sqrt(2 / np.pi)

    low, high = np.percentile(shell, [50.0, 99.0])
    if high <= low or excess_shape(low) <= 0:
        return float(low)
    if excess_shape(high) >= 0:  # no noise to speak of above the median: its top
        return float(high)
    # to the last bits: a looser root would move with the data's last bits by its whole tolerance
    return float(optimize.brentq(excess_shape, low, high, xtol=1e-12 * (abs(high) + 1.0)))


def cortical_porosity(volume: np.ndarray, solid: np.ndarray, cortex: np.ndarray, envelope: np.ndarray,
                      marrow: np.ndarray) -> float:
    """Porosity of the cortex from the grey values of ``volume``: 1 - the mean bone fraction of ``cortex`` (pores
    filled, as ``solid``) ``POROSITY_DEPTH_VOXELS`` in from its surfaces.

    Raises
    ------
    NoGreyLevels
        The cortex is too thin to read its levels or to leave an inside.
    """
    inside = ndimage.binary_erosion(cortex, iterations=POROSITY_DEPTH_VOXELS)
    if not inside.any():
        raise NoGreyLevels(f"the cortex is less than {2 * POROSITY_DEPTH_VOXELS + 1} voxels thick")
    fraction = bone_fraction(volume, grey_levels(volume, solid, envelope, marrow, matrix_level), envelope, marrow)
    return 1.0 - float(np.mean(fraction[inside], dtype=np.float64))


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
