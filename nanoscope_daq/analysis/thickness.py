"""Local thickness by the largest-sphere method (Hildebrand & Ruegsegger, J. Microsc. 185:67, 1997).

The local thickness at a point of a structure is the diameter of the largest sphere that
contains the point and lies wholly inside the structure. On the voxel grid, the largest
ball centred on voxel c is {p : |p - c| < R(c)}, R = Euclidean distance to the nearest
background voxel centre (beyond the array counts as unknown, not background: a structure
cut by the box keeps the thickness seen inside it).

The continuous boundary lies between the last object voxel and the first background
voxel: half a voxel short of R for faces aligned with the grid, nearly at R for oblique
and curved faces. The diameter is reported as 2 R - 0.5 voxels, the middle of that
range: a plate n voxels thick measures n + 0.5, a digitised rod or ball of diameter d
measures d - 0.4 .. d - 0.9 on average (tests/test_analysis_morphometry.py). porespy's
``local_thickness`` returns R itself, i.e. (thickness + 0.5) / 2.

Only ridge centres are painted (a ball inside a neighbour's ball, to ``step``, adds
nothing), in ascending radius bins ``step`` voxels wide, each ball with its bin's lower
radius: a voxel ends at most about 2 ``step`` voxels below its exact largest-sphere value.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

DIRECT_PAINT_POINTS = 2_000_000
"""Balls of one bin are painted point by point below this many points, else by a distance transform."""


def local_thickness(mask: np.ndarray, step: float = 0.25) -> np.ndarray:
    """Local thickness (voxels, float32) at every voxel of ``mask``; 0 outside it."""
    if step <= 0:
        raise ValueError(f"thickness step must be > 0 voxels, got {step}")
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=np.float32)
    if not mask.any():
        return out
    radius = ndimage.distance_transform_edt(mask).astype(np.float32)
    centres = np.argwhere(_ridge(radius, step))
    radii = radius[tuple(centres.T)]
    lower = 1.0 + step * np.floor((radii - 1.0) / step + 1e-6)
    order = np.argsort(lower, kind="stable")
    centres, lower = centres[order], lower[order]
    bounds = np.flatnonzero(np.diff(lower)) + 1
    for chunk, r in zip(np.split(centres, bounds), lower[np.r_[0, bounds]], strict=True):
        _paint_balls(out, mask, chunk, float(r))
    return out


def _ridge(radius: np.ndarray, tolerance: float) -> np.ndarray:
    """Voxels whose largest ball is not inside (to ``tolerance``) the largest ball of one of their neighbours."""
    padded = np.pad(radius, 1, constant_values=-np.inf)
    redundant = np.zeros(radius.shape, dtype=bool)
    for offset in itertools.product((-1, 0, 1), repeat=radius.ndim):
        if not any(offset):
            continue
        shifted = padded[tuple(slice(1 + o, padded.shape[a] - 1 + o) for a, o in enumerate(offset))]
        redundant |= shifted >= radius + np.sqrt(sum(o * o for o in offset)) - tolerance
    return (radius > 0) & ~redundant


def _paint_balls(out: np.ndarray, mask: np.ndarray, centres: np.ndarray, r: float) -> None:
    """Set 2 r - 0.5 at voxels of ``mask`` closer than ``r`` to any of ``centres`` (overwrites: call in ascending r)."""
    reach = int(np.ceil(r))
    grid = np.mgrid[(slice(-reach, reach + 1),) * mask.ndim].reshape(mask.ndim, -1).T
    ball = grid[np.einsum("ij,ij->i", grid, grid) < r * r]
    value = 2.0 * r - 0.5
    if len(centres) * len(ball) <= DIRECT_PAINT_POINTS:
        points = (centres[:, None, :] + ball[None, :, :]).reshape(-1, mask.ndim)
        inside = np.all((points >= 0) & (points < mask.shape), axis=1)
        index = tuple(points[inside].T)
        out[index] = np.where(mask[index], value, out[index])
        return
    lo = np.maximum(centres.min(axis=0) - reach, 0)
    hi = np.minimum(centres.max(axis=0) + reach + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    seeds = np.ones(tuple(hi - lo), dtype=bool)
    seeds[tuple((centres - lo).T)] = False
    covered = (ndimage.distance_transform_edt(seeds) < r) & mask[box]
    out[box][covered] = value
