"""Analytic phantoms whose projections are known exactly: ellipses (2D) and ellipsoids (3D).

Each shape adds ``value`` (attenuation, 1/mm) inside it. Line integrals are chords
times values, in closed form, for parallel and cone beams in this package's geometry
conventions (geometry.py); a detector pixel can average ``subsamples`` x
``subsamples`` rays over its area (``subsamples`` rays across its width for slices),
and the reference images average ``supersample``^2 (or ^3) points per voxel, so that a
reconstruction is compared with what a pixel of it should hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .geometry import ConeGeometry, ParallelGeometry, VolumeGrid
from .projector import detector_frame


@dataclass(frozen=True)
class Ellipses:
    """2D ellipses: centres (n, 2) mm, semi-axes (n, 2) mm, rotation (n,) deg counter-clockwise, values (n,) 1/mm."""

    centres: np.ndarray
    semi_axes: np.ndarray
    angles_deg: np.ndarray
    values: np.ndarray

    def scaled(self, factor: float) -> Ellipses:
        return Ellipses(self.centres * factor, self.semi_axes * factor, self.angles_deg, self.values)


@dataclass(frozen=True)
class Ellipsoids:
    """3D ellipsoids turned about z: centres (n, 3) mm, semi-axes (n, 3) mm, rotation (n,) deg, values (n,) 1/mm."""

    centres: np.ndarray
    semi_axes: np.ndarray
    angles_deg: np.ndarray
    values: np.ndarray

    def scaled(self, factor: float) -> Ellipsoids:
        return Ellipsoids(self.centres * factor, self.semi_axes * factor, self.angles_deg, self.values)


# Modified Shepp-Logan (Toft 1996): value, a, b, x0, y0, phi -- on the unit disc.
_SHEPP_LOGAN = np.array([
    [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
    [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0],
    [-0.2, 0.11, 0.31, 0.22, 0.0, -18.0],
    [-0.2, 0.16, 0.41, -0.22, 0.0, 18.0],
    [0.1, 0.21, 0.25, 0.0, 0.35, 0.0],
    [0.1, 0.046, 0.046, 0.0, 0.1, 0.0],
    [0.1, 0.046, 0.046, 0.0, -0.1, 0.0],
    [0.1, 0.046, 0.023, -0.08, -0.605, 0.0],
    [0.1, 0.023, 0.023, 0.0, -0.606, 0.0],
    [0.1, 0.023, 0.046, 0.06, -0.605, 0.0],
])
# 3D version (Kak & Slaney, table 3.2, modified values): value, a, b, c, x0, y0, z0, phi.
_SHEPP_LOGAN_3D = np.array([
    [1.0, 0.69, 0.92, 0.9, 0.0, 0.0, 0.0, 0.0],
    [-0.8, 0.6624, 0.874, 0.88, 0.0, 0.0, 0.0, 0.0],
    [-0.2, 0.41, 0.16, 0.21, -0.22, 0.0, -0.25, 108.0],
    [-0.2, 0.31, 0.11, 0.22, 0.22, 0.0, -0.25, 72.0],
    [0.2, 0.21, 0.25, 0.5, 0.0, 0.35, -0.25, 0.0],
    [0.2, 0.046, 0.046, 0.046, 0.0, 0.1, -0.25, 0.0],
    [0.1, 0.046, 0.023, 0.02, -0.08, -0.65, -0.25, 0.0],
    [0.1, 0.046, 0.023, 0.02, 0.06, -0.65, -0.25, 90.0],
    [0.2, 0.056, 0.04, 0.1, 0.06, -0.105, 0.625, 90.0],
    [-0.2, 0.056, 0.056, 0.1, 0.0, 0.1, 0.625, 0.0],
])


def shepp_logan(radius_mm: float, value_per_mm: float = 1.0) -> Ellipses:
    """The modified Shepp-Logan head phantom fitted in a disc of ``radius_mm``, outer value ``value_per_mm``."""
    t = _SHEPP_LOGAN
    return Ellipses(t[:, 3:5] * radius_mm, t[:, 1:3] * radius_mm, t[:, 5].copy(), t[:, 0] * value_per_mm)


def shepp_logan_3d(radius_mm: float, value_per_mm: float = 1.0, half_height_mm: float | None = None) -> Ellipsoids:
    """The 3D modified Shepp-Logan phantom fitted in a ball of ``radius_mm``.

    With ``half_height_mm`` it is stretched along z to that half height.
    """
    t = _SHEPP_LOGAN_3D
    scale = np.array([radius_mm, radius_mm, radius_mm if half_height_mm is None else half_height_mm])
    return Ellipsoids(t[:, 4:7] * scale, t[:, 1:4] * scale, t[:, 7].copy(), t[:, 0] * value_per_mm)


def _offsets(subsamples: int) -> np.ndarray:
    return (np.arange(subsamples) + 0.5) / subsamples - 0.5


def parallel_sinogram(ellipses: Ellipses, geometry: ParallelGeometry, subsamples: int = 1) -> np.ndarray:
    """Exact parallel-beam line integrals (angles, cols) of 2D ellipses (a slice: z plays no part)."""
    theta = np.radians(geometry.angles_array)[:, None, None]
    cols = np.arange(geometry.cols)[None, :, None] + _offsets(subsamples)[None, None, :]
    u = (cols - float(geometry.cor_value())) * geometry.pixel_mm  # lab x at the sample
    normal = (np.cos(theta), -np.sin(theta))  # specimen-frame direction whose coordinate is u
    out = np.zeros((theta.shape[0], u.shape[1], u.shape[2]))
    for (cx, cy), (a, b), phi, value in zip(ellipses.centres, ellipses.semi_axes, np.radians(ellipses.angles_deg),
                                            ellipses.values):
        nx = normal[0] * np.cos(phi) + normal[1] * np.sin(phi)  # normal in the ellipse's own frame
        ny = -normal[0] * np.sin(phi) + normal[1] * np.cos(phi)
        r2 = (a * nx) ** 2 + (b * ny) ** 2
        s = u - (cx * normal[0] + cy * normal[1])
        out += value * 2 * a * b * np.sqrt(np.clip(r2 - s**2, 0, None)) / r2
    return out.mean(axis=-1)


def poisson_line_integrals(lines: np.ndarray, photons: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy ``lines``: -log of Poisson counts of ``photons`` x exp(-scale x lines), divided by ``scale``.

    ``photons`` per unattenuated pixel; ``scale`` turns the phantom's line integrals into
    those of the imaged specimen (zero counts read as 1).
    """
    counts = rng.poisson(photons * np.exp(-scale * lines))
    return -np.log(np.maximum(counts, 1) / photons) / scale


def rasterise(ellipses: Ellipses, shape: tuple[int, int], voxel_mm: float, supersample: int = 4,
              centre_mm: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Mean value of the ellipses over each pixel of an (ny, nx) grid (pixel centres as in VolumeGrid)."""
    ny, nx = shape
    sub = _offsets(supersample)
    x = ((np.arange(nx)[:, None] + 0.5 + sub[None, :] - nx / 2) * voxel_mm + centre_mm[0]).reshape(-1)
    y = ((np.arange(ny)[:, None] + 0.5 + sub[None, :] - ny / 2) * voxel_mm + centre_mm[1]).reshape(-1)
    image = np.zeros((y.size, x.size))
    for (cx, cy), (a, b), phi, value in zip(ellipses.centres, ellipses.semi_axes, np.radians(ellipses.angles_deg),
                                            ellipses.values):
        dx, dy = x[None, :] - cx, y[:, None] - cy
        xr = dx * np.cos(phi) + dy * np.sin(phi)
        yr = -dx * np.sin(phi) + dy * np.cos(phi)
        image += value * ((xr / a) ** 2 + (yr / b) ** 2 <= 1)
    return image.reshape(ny, supersample, nx, supersample).mean(axis=(1, 3))


def _rotation_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _chords(ellipsoids: Ellipsoids, start: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Sum of value x chord length of rays start + t direction (specimen frame, (..., 3), |direction| = 1)."""
    out = np.zeros(start.shape[:-1])
    for c, axes, phi, value in zip(ellipsoids.centres, ellipsoids.semi_axes, ellipsoids.angles_deg, ellipsoids.values):
        rot = _rotation_z(phi)
        a = (start - c) @ rot / axes  # to the unit sphere
        d = direction @ rot / axes
        dd = np.einsum("...i,...i", d, d)
        ad = np.einsum("...i,...i", a, d)
        aa = np.einsum("...i,...i", a, a)
        disc = np.clip(ad**2 - dd * (aa - 1), 0, None)
        out += value * 2 * np.sqrt(disc) / dd
    return out


def project_ellipsoids(ellipsoids: Ellipsoids, geometry: ParallelGeometry | ConeGeometry, subsamples: int = 1,
                       shifts_mm: np.ndarray | None = None) -> np.ndarray:
    """Exact line integrals (angles, rows, cols) of the ellipsoids in either geometry.

    The detector's pose (tilt, roll, offsets) is the geometry's (projector.py's ray
    geometry); ``shifts_mm`` (angles, 3) translates the specimen in the lab at each angle
    (rigid motion).
    """
    frame = detector_frame(geometry, "cpu", torch.float64)
    sub = _offsets(subsamples)
    cols = torch.from_numpy((np.arange(geometry.cols)[:, None] + sub[None, :]).reshape(-1))
    rows = torch.from_numpy((np.arange(geometry.rows)[:, None] + sub[None, :]).reshape(-1))
    pixels = frame.pixel_points(cols, rows).numpy()  # (rows, cols, 3) lab
    axis = np.array([float(frame.axis_x), 0.0, 0.0])
    if frame.source is None:
        start, direction = pixels, np.broadcast_to(np.array([0.0, 1.0, 0.0]), pixels.shape)
    else:
        source = frame.source.numpy()
        direction = pixels - source
        direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
        start = np.broadcast_to(source, direction.shape)
    shifts = np.zeros((geometry.num_angles, 3)) if shifts_mm is None else np.asarray(shifts_mm, float)
    out = np.empty((geometry.num_angles, geometry.rows, geometry.cols))
    for i, angle in enumerate(geometry.angles_array):
        to_specimen = _rotation_z(-angle)
        lines = _chords(ellipsoids, (start - axis - shifts[i]) @ to_specimen.T, direction @ to_specimen.T)
        out[i] = lines.reshape(geometry.rows, subsamples, geometry.cols, subsamples).mean(axis=(1, 3))
    return out


def rasterise_ellipsoids(ellipsoids: Ellipsoids, volume: VolumeGrid, supersample: int = 2) -> np.ndarray:
    """Mean value of the ellipsoids over each voxel of ``volume`` (z-y-x)."""
    nz, ny, nx = volume.shape
    sub = _offsets(supersample)

    def axis(n: int, centre: float) -> np.ndarray:
        return ((np.arange(n)[:, None] + 0.5 + sub[None, :] - n / 2) * volume.voxel_mm + centre).reshape(-1)

    x, y, z = axis(nx, volume.centre_mm[0]), axis(ny, volume.centre_mm[1]), axis(nz, volume.centre_mm[2])
    out = np.zeros((z.size, y.size, x.size), dtype=np.float32)
    for c, axes, phi, value in zip(ellipsoids.centres, ellipsoids.semi_axes, ellipsoids.angles_deg, ellipsoids.values):
        rot = _rotation_z(phi)
        dx, dy = x[None, :] - c[0], y[:, None] - c[1]
        xr = (dx * rot[0, 0] + dy * rot[1, 0]) / axes[0]
        yr = (dx * rot[0, 1] + dy * rot[1, 1]) / axes[1]
        zr = (z - c[2]) / axes[2]
        out += value * ((xr**2 + yr**2)[None, :, :] + (zr**2)[:, None, None] <= 1)
    return out.reshape(nz, supersample, ny, supersample, nx, supersample).mean(axis=(1, 3, 5))


def random_bone_slice(rng: np.random.Generator, radius_mm: float, value_per_mm: float = 1.0) -> Ellipses:
    """A random 2D slice of a small animal's limb: soft tissue, a few cortical bone rings with marrow, and pores.

    Soft tissue (0.2 ``value_per_mm``) fills an ellipse of about ``radius_mm``; 1-3 bones
    (1.0) with marrow (back to 0.25) sit inside it; 4-12 small pores (0.2 below the bone)
    sit in the cortices. Training and test slices for learned reconstruction.
    """
    centres, axes, angles, values = [[0.0, 0.0]], [[radius_mm * rng.uniform(0.8, 0.95),
                                                    radius_mm * rng.uniform(0.6, 0.9)]], [rng.uniform(0, 180)], [0.2]
    for _ in range(rng.integers(1, 4)):
        size = radius_mm * rng.uniform(0.15, 0.3)
        centre = rng.uniform(-0.35, 0.35, 2) * radius_mm
        shape = np.array([size, size * rng.uniform(0.7, 1.0)])
        turn = rng.uniform(0, 180)
        thickness = rng.uniform(0.25, 0.45)
        centres += [centre, centre]
        axes += [shape, shape * (1 - thickness)]
        angles += [turn, turn]
        values += [0.8, -0.75]
        for _ in range(rng.integers(2, 5)):
            direction = rng.uniform(0, 2 * np.pi)
            at = centre + (1 - thickness / 2) * shape * np.array([np.cos(direction), np.sin(direction)])
            pore = radius_mm * rng.uniform(0.01, 0.025)
            centres.append(at)
            axes.append([pore, pore])
            angles.append(0.0)
            values.append(-0.2)
    return Ellipses(np.array(centres, float), np.array(axes, float), np.array(angles, float),
                    np.array(values, float) * value_per_mm)
