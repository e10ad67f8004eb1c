"""Post-processing of a network's labels: shade-off into bone, island removal, closing, outer geometry.

Following Silveira et al. (2024): shade-off (code 5) is bone the phase ring darkened, so
it becomes bone; every 26-connected island of one label smaller than ``min_island``
voxels is noise and takes the label of the nearest voxel of a kept island; the bone
tissue (bone + LCN) is closed with a ball of ``closing_radius`` voxels and what the
closing adds becomes bone. The outer geometry of the specimen is the region not
connected to the background class, slice by slice with holes filled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .labels import Code, bone_tissue

FULL_26 = np.ones((3, 3, 3), dtype=bool)


def merge_shade_off(labels: np.ndarray) -> np.ndarray:
    return np.where(labels == Code.SHADE_OFF, np.uint8(Code.BONE), labels).astype(np.uint8)


def remove_islands(labels: np.ndarray, min_island: int) -> np.ndarray:
    """Relabel every 26-connected single-label island below ``min_island`` voxels by its nearest kept neighbour."""
    if min_island <= 1:
        return labels
    small = np.zeros(labels.shape, dtype=bool)
    for code in np.unique(labels):
        pieces, count = ndimage.label(labels == code, structure=FULL_26)
        sizes = np.bincount(pieces.ravel(), minlength=count + 1)
        tiny = sizes < min_island
        tiny[0] = False
        small |= tiny[pieces]
    if not small.any() or small.all():
        return labels
    nearest = ndimage.distance_transform_edt(small, return_distances=False, return_indices=True)
    return labels[tuple(nearest)]


def close_bone(labels: np.ndarray, radius: int) -> np.ndarray:
    """Closing of bone tissue with a ball of ``radius`` voxels; added voxels become bone."""
    if radius < 1:
        return labels
    grid = np.indices((2 * radius + 1,) * 3) - radius
    ball = np.sum(grid**2, axis=0) <= radius**2
    tissue = bone_tissue(labels)
    closed = ndimage.binary_closing(np.pad(tissue, radius, mode="edge"), ball)[(slice(radius, -radius),) * 3]
    out = labels.copy()
    out[closed & ~tissue] = Code.BONE
    return out


def outer_geometry(labels: np.ndarray) -> np.ndarray:
    """The specimen's volume: every voxel not background, with each slice's holes filled."""
    inside = labels != Code.BACKGROUND
    return np.stack([ndimage.binary_fill_holes(s) for s in inside])


def postprocess(labels: np.ndarray, min_island: int = 100, closing_radius: int = 1) -> np.ndarray:
    """Shade-off into bone, island removal, closing (the order of Silveira et al. 2024)."""
    return close_bone(remove_islands(merge_shade_off(labels), min_island), closing_radius)
