"""Rigid (6 degrees of freedom) registration of a follow-up volume to a baseline, coarse to fine.

The cost is the mean squared difference of the two Gaussian-smoothed volumes after
resampling the follow-up (trilinear) through the transform; Powell's method minimises it
at each level of a pyramid, starting from the translation that aligns the centres of
mass. Rotations are about the volume centre; angles in degrees about the z, y, x axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class RigidTransform:
    """Maps baseline voxel coordinates p (z, y, x) to follow-up coordinates R (p - c) + c + t."""

    angles_deg: tuple[float, float, float]
    shift_voxels: tuple[float, float, float]
    centre: tuple[float, float, float]

    @property
    def matrix(self) -> np.ndarray:
        return Rotation.from_euler("zyx", self.angles_deg, degrees=True).as_matrix()

    def resample(self, moving: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """``moving`` (follow-up) on the baseline grid."""
        matrix = self.matrix
        centre = np.asarray(self.centre)
        offset = centre - matrix @ centre + np.asarray(self.shift_voxels)
        return ndimage.affine_transform(moving, matrix, offset=offset, order=order, cval=cval, mode="constant")


def rigid_register(fixed: np.ndarray, moving: np.ndarray, levels: tuple[int, ...] = (4, 2),
                   smoothing_voxels: float = 1.0) -> RigidTransform:
    """The rigid transform that best maps ``moving`` (follow-up) onto ``fixed`` (baseline); same shapes."""
    if fixed.shape != moving.shape:
        raise ValueError(f"registration needs volumes of the same shape, got {fixed.shape} and {moving.shape}")
    fixed = ndimage.gaussian_filter(np.asarray(fixed, dtype=np.float32), smoothing_voxels)
    moving = ndimage.gaussian_filter(np.asarray(moving, dtype=np.float32), smoothing_voxels)
    centre = (np.asarray(fixed.shape) - 1) / 2
    shift = np.asarray(ndimage.center_of_mass(moving)) - np.asarray(ndimage.center_of_mass(fixed))
    params = np.r_[0.0, 0.0, 0.0, shift]
    for factor in levels:
        f = ndimage.zoom(fixed, 1 / factor, order=1) if factor > 1 else fixed
        m = ndimage.zoom(moving, 1 / factor, order=1) if factor > 1 else moving
        level_centre = (np.asarray(f.shape) - 1) / 2

        def cost(p: np.ndarray, f=f, m=m, c=level_centre) -> float:
            warped = RigidTransform(tuple(p[:3]), tuple(p[3:]), tuple(c)).resample(m)
            return float(np.mean((warped - f) ** 2))

        start = np.r_[params[:3], params[3:] / factor]
        result = optimize.minimize(cost, start, method="Powell",
                                   options={"xtol": 1e-2, "ftol": 1e-6, "maxfev": 1000})
        params = np.r_[result.x[:3], result.x[3:] * factor]
    return RigidTransform(tuple(float(a) for a in params[:3]), tuple(float(t) for t in params[3:]),
                          tuple(float(c) for c in centre))
