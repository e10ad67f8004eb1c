"""FDK back-projection compiled for the CPU (numba): the same sums as backproject.py's torch code, 7-8x faster.

torch's voxel-driven cone-beam back-projection builds a sampling grid of every voxel for
every angle and calls ``grid_sample``: memory traffic, not arithmetic, sets its pace, and
a 256^3 volume from 720 projections takes over two minutes on two cores. This kernel uses what
the geometry of a flat detector gives for free:

* for one angle, a voxel column (x, y) projects to one detector column ``u`` and its
  heights z to rows ``v = v0 + z * dv`` along it (the magnification depends on x, y
  only), so ``u``, the FDK weight and ``dv`` are computed once per column and angle;
* the projections are stored transposed (angles, cols, rows) with a zero border, so the
  rows a voxel column reads are contiguous, and the rows inside the detector are found
  once per column (no test per voxel);
* the volume is walked in tiles of 16 columns of voxels (all heights), each tile summed
  over every angle while it stays in cache; tiles run in parallel.

Bilinear interpolation with zero outside the detector, as ``grid_sample`` with
``align_corners=False`` and zero padding samples it. It does not propagate gradients:
backproject.py uses it only when none is wanted.
"""

from __future__ import annotations

import math

import numba
import numpy as np

TILE_COLUMNS = 16
"""Voxel columns (x at one y, every z) summed over all angles together: a tile of 16 x nz floats stays in cache."""


@numba.njit(parallel=True, fastmath=True, cache=True)
def _backproject(padded: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray, x: np.ndarray, y: np.ndarray,
                 z0: float, dz: float, sod: float, sdd: float, pixel: float, central_col: float,
                 central_row: float, axis_x: float, out: np.ndarray) -> None:  # pragma: no cover - compiled
    n_angles, padded_cols, padded_rows = padded.shape
    ny, nx, nz = out.shape
    one = np.float32(1.0)
    tiles_x = (nx + TILE_COLUMNS - 1) // TILE_COLUMNS
    for tile in numba.prange(ny * tiles_x):
        iy = tile // tiles_x
        x_start = (tile % tiles_x) * TILE_COLUMNS
        x_stop = min(nx, x_start + TILE_COLUMNS)
        for a in range(n_angles):
            cos, sin = cos_t[a], sin_t[a]
            projection = padded[a]
            for ix in range(x_start, x_stop):
                depth = sod + x[ix] * sin + y[iy] * cos
                scale = sdd / depth
                u = central_col + (x[ix] * cos - y[iy] * sin + axis_x) * scale / pixel + one  # +1: the zero border
                if u < 0 or u >= padded_cols - 1:
                    continue
                column = int(u)
                fu = np.float32(u - column)
                weight = np.float32((sod / depth) ** 2)
                dv = np.float32(dz * scale / pixel)
                v0 = np.float32(central_row + z0 * scale / pixel + one)
                first = max(0, int(math.ceil(-v0 / dv)))
                last = min(nz, int(math.ceil((padded_rows - 1 - v0) / dv)))
                left, right = projection[column], projection[column + 1]
                voxels = out[iy, ix]
                for iz in range(first, last):
                    v = v0 + np.float32(iz) * dv
                    row = min(int(v), padded_rows - 2)
                    fv = v - np.float32(row)
                    at_left = left[row] + fv * (left[row + 1] - left[row])
                    at_right = right[row] + fv * (right[row + 1] - right[row])
                    voxels[iz] += weight * (at_left + fu * (at_right - at_left))


def backproject_cone_compiled(filtered: np.ndarray, angles_rad: np.ndarray, x: np.ndarray, y: np.ndarray,
                              z: np.ndarray, *, sod: float, sdd: float, pixel_mm: float, central_col: float,
                              central_row: float, axis_x_mm: float) -> np.ndarray:
    """FDK back-projection of filtered projections (angles, rows, cols) onto the voxel centres x, y, z (mm).

    Returns the (nz, ny, nx) float32 volume; ``z`` must be evenly spaced and increasing.
    The geometry is backproject.py's ``backproject_cone``: voxel (x, y, z) at angle theta
    projects to column ``central_col + q_x M / pixel`` and row ``central_row + z M / pixel``,
    M = sdd / (sod + q_y), weighted by (sod / (sod + q_y))^2.
    """
    n_angles, rows, cols = filtered.shape
    padded = np.zeros((n_angles, cols + 2, rows + 2), np.float32)
    padded[:, 1:-1, 1:-1] = filtered.transpose(0, 2, 1)
    out = np.zeros((y.size, x.size, z.size), np.float32)
    dz = z[1] - z[0] if z.size > 1 else 1.0
    f32 = np.float32
    _backproject(padded, np.cos(angles_rad).astype(f32), np.sin(angles_rad).astype(f32), x.astype(f32),
                 y.astype(f32), f32(z[0]), f32(dz), f32(sod), f32(sdd), f32(pixel_mm), f32(central_col),
                 f32(central_row), f32(axis_x_mm), out)
    return np.ascontiguousarray(out.transpose(2, 0, 1))
