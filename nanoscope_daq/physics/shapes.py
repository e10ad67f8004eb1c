"""Implicit convex shapes: where a ray enters and leaves them, what they contain, their volume.

Rays are ``A + t * D`` with ``t`` a free parameter (the projector uses t in [0, 1]
from source to detector). Every shape here is convex, so a ray meets it in one
interval [t0, t1]; a miss is (inf, -inf). Arrays broadcast: a shape's parameters of
shape (..., 3) meet rays of shape (..., 3). Lengths are in the units of the inputs
(mm throughout the simulator).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

MISS = (np.inf, -np.inf)


def overlap(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Length of the intersection of parameter intervals [a0, a1] and [b0, b1] (0 if disjoint)."""
    return np.maximum(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0)


def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", u, v)


def closest_approach_interval(qa: np.ndarray, t_closest: np.ndarray, room: np.ndarray):
    """Interval t_closest +- sqrt(room / qa): a quadric's chord written about the ray's closest approach.

    ``room`` is 1 - (the quadric's form at the closest point) scaled like qa; computing the
    closest point first keeps the chord exact when the ray starts far away (no
    cancellation between huge terms). qa == 0 (ray parallel to a cylinder): all t if room >= 0.
    """
    qa, t_closest, room = np.broadcast_arrays(qa, t_closest, room)
    flat = qa <= 1e-300
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt(np.maximum(room, 0.0) / qa)
    hit = room > 0
    t0 = np.where(hit, t_closest - half, np.inf)
    t1 = np.where(hit, t_closest + half, -np.inf)
    t0 = np.where(flat, np.where(room >= 0, -np.inf, np.inf), t0)
    t1 = np.where(flat, np.where(room >= 0, np.inf, -np.inf), t1)
    return t0, t1


def _quadric_about_closest(w: np.ndarray, d: np.ndarray, metric, limit) -> tuple[np.ndarray, np.ndarray]:
    """Where metric(w + t d, w + t d) <= limit, solved about the closest point (metric: bilinear form)."""
    qa = metric(d, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_closest = np.where(qa > 1e-300, -metric(w, d) / qa, 0.0)
    m = w + t_closest[..., None] * d
    return closest_approach_interval(qa, t_closest, limit - metric(m, m))


def slab_interval(a: np.ndarray, d: np.ndarray, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Where lo <= a + t d <= hi along one coordinate (lo, hi scalars or arrays)."""
    a, d, lo, hi = np.broadcast_arrays(*(np.asarray(v, float) for v in (a, d, lo, hi)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (lo - a) / d, (hi - a) / d
    moving = d != 0
    inside = (a >= lo) & (a <= hi)
    t0 = np.where(moving, np.minimum(ta, tb), np.where(inside, -np.inf, np.inf))
    t1 = np.where(moving, np.maximum(ta, tb), np.where(inside, np.inf, -np.inf))
    return t0, t1


@dataclass(frozen=True)
class Ellipse:
    """Axis-aligned ellipse in the x-y plane: the cross-section of a z-invariant cylinder."""

    cx: float
    cy: float
    a: float
    b: float

    def grown(self, by: float) -> Ellipse:
        """Semi-axes changed by ``by`` (positive grows, negative shrinks)."""
        return Ellipse(self.cx, self.cy, self.a + by, self.b + by)

    @property
    def area(self) -> float:
        return float(np.pi * self.a * self.b)

    @property
    def perimeter(self) -> float:
        """Ramanujan's second approximation (relative error < 1e-9 for a/b < 2)."""
        h = ((self.a - self.b) / (self.a + self.b)) ** 2
        return float(np.pi * (self.a + self.b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h))))

    def scale_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """s with (x, y) on the concentric ellipse of semi-axes (s a, s b): s < 1 inside."""
        return np.sqrt(((x - self.cx) / self.a) ** 2 + ((y - self.cy) / self.b) ** 2)

    def clearance_inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """A lower bound on the distance from an inside point to the boundary (negative outside).

        (x, y) lies on the homothetic ellipse s*E; s*E + (1-s)*B(min(a, b)) is inside E, so
        the distance is at least (1 - s) * min(a, b); outside, the same bound holds for (s - 1).
        """
        return (1.0 - self.scale_of(x, y)) * min(self.a, self.b)

    def xy_interval(self, ax: np.ndarray, ay: np.ndarray, dx: np.ndarray, dy: np.ndarray):
        """Parameter interval of the rays' x-y motion inside the ellipse (rays along z: all or nothing)."""
        w = np.stack(np.broadcast_arrays((ax - self.cx) / self.a, (ay - self.cy) / self.b), axis=-1)
        u = np.stack(np.broadcast_arrays(dx / self.a, dy / self.b), axis=-1)
        return _quadric_about_closest(w, u, _dot, 1.0)

    def line_chords(self, px: np.ndarray, py: np.ndarray, ux: float, uy: float):
        """Along x-y lines p + s u (|u| = 1): the s interval inside the ellipse."""
        return self.xy_interval(px, py, np.full_like(px, ux), np.full_like(py, uy))


def ellipsoid_interval(a: np.ndarray, d: np.ndarray, centre: np.ndarray, q: np.ndarray):
    """Rays against ellipsoids {x : (x - c)^T q (x - c) <= 1}; q of shape (..., 3, 3)."""

    def metric(u, v):
        return _dot(u, np.einsum("...ij,...j->...i", q, v))

    return _quadric_about_closest(a - centre, d, metric, 1.0)


def capsule_interval(a: np.ndarray, d: np.ndarray, p0: np.ndarray, p1: np.ndarray, r: np.ndarray):
    """Rays against capsules (all points within r of the segment p0-p1)."""
    r2 = np.asarray(r, float) ** 2
    axis = p1 - p0
    length = np.sqrt(_dot(axis, axis))
    u = axis / np.maximum(length, 1e-300)[..., None]
    w = a - p0
    du, wu = _dot(d, u), _dot(w, u)
    d_perp = d - du[..., None] * u
    w_perp = w - wu[..., None] * u
    c0, c1 = _quadric_about_closest(w_perp, d_perp, _dot, r2)
    s0, s1 = slab_interval(wu, du, 0.0, length)
    c0, c1 = np.maximum(c0, s0), np.minimum(c1, s1)
    hit_c = c1 > c0
    e0, e1 = _quadric_about_closest(w, d, _dot, r2)
    f0, f1 = _quadric_about_closest(a - p1, d, _dot, r2)
    t0 = np.minimum(np.minimum(np.where(hit_c, c0, np.inf), e0), f0)
    t1 = np.maximum(np.maximum(np.where(hit_c, c1, -np.inf), e1), f1)
    return t0, t1


def segment_distance(points: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance from points to segments p0-p1 (broadcasting)."""
    axis = p1 - p0
    t = np.clip(_dot(points - p0, axis) / np.maximum(_dot(axis, axis), 1e-300), 0.0, 1.0)
    return np.linalg.norm(points - (p0 + t[..., None] * axis), axis=-1)


def segment_segment_distance(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Closest distance between segments a0-a1 and b0-b1 (broadcasting), robust for parallel ones."""
    u, v, w = a1 - a0, b1 - b0, a0 - b0
    a, b, c, d, e = _dot(u, u), _dot(u, v), _dot(v, v), _dot(u, w), _dot(v, w)
    denom = a * c - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(denom > 1e-14 * a * c, np.clip((b * e - c * d) / denom, 0, 1), 0.0)
        t = np.where(c > 0, (b * s + e) / c, 0.0)
    t = np.clip(t, 0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(a > 0, np.clip((b * t - d) / a, 0, 1), 0.0)
    return np.linalg.norm(w + s[..., None] * u - t[..., None] * v, axis=-1)


@dataclass(frozen=True)
class Ellipsoids:
    """Ellipsoids with centres (n, 3), semi-axes (n, 3) and axis directions as columns of rotations (n, 3, 3)."""

    centres: np.ndarray
    semi_axes: np.ndarray
    rotations: np.ndarray

    @cached_property
    def q(self) -> np.ndarray:
        """Shape matrices: (x - c)^T q (x - c) <= 1 inside."""
        return (self.rotations / self.semi_axes[:, None, :] ** 2) @ np.swapaxes(self.rotations, 1, 2)

    @cached_property
    def volumes(self) -> np.ndarray:
        return 4.0 / 3.0 * np.pi * np.prod(self.semi_axes, axis=1)

    @cached_property
    def half_extents(self) -> np.ndarray:
        """Half-widths of the axis-aligned bounding boxes (n, 3)."""
        return np.sqrt(np.einsum("nik,nk->ni", self.rotations**2, self.semi_axes**2))

    def __len__(self) -> int:
        return len(self.centres)

    def subset(self, index: np.ndarray) -> Ellipsoids:
        return Ellipsoids(self.centres[index], self.semi_axes[index], self.rotations[index])

    def scale_of(self, points: np.ndarray) -> np.ndarray:
        """s for points (n, 3) against their own ellipsoid: the point lies on the ellipsoid scaled by s."""
        w = points - self.centres
        return np.sqrt(np.einsum("ni,nij,nj->n", w, self.q, w))

    def contains(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Whether points (m, 3) lie in ellipsoid ``index`` (m,) each."""
        w = points - self.centres[index]
        return np.einsum("mi,mij,mj->m", w, self.q[index], w) <= 1.0


@dataclass(frozen=True)
class Capsules:
    """Capsules: segments p0-p1 (n, 3) swept by spheres of radius r (n,)."""

    p0: np.ndarray
    p1: np.ndarray
    radii: np.ndarray

    def __len__(self) -> int:
        return len(self.radii)

    @property
    def lengths(self) -> np.ndarray:
        return np.linalg.norm(self.p1 - self.p0, axis=1)

    @property
    def volumes(self) -> np.ndarray:
        return np.pi * self.radii**2 * self.lengths + 4.0 / 3.0 * np.pi * self.radii**3

    @property
    def surfaces(self) -> np.ndarray:
        return 2 * np.pi * self.radii * self.lengths + 4 * np.pi * self.radii**2

    def subset(self, index: np.ndarray) -> Capsules:
        return Capsules(self.p0[index], self.p1[index], self.radii[index])

    def with_radii(self, radii: np.ndarray) -> Capsules:
        return Capsules(self.p0, self.p1, np.asarray(radii, float))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding boxes (lo, hi), each (n, 3)."""
        r = self.radii[:, None]
        return np.minimum(self.p0, self.p1) - r, np.maximum(self.p0, self.p1) + r

    def contains(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        return segment_distance(points, self.p0[index], self.p1[index]) <= self.radii[index]

    @staticmethod
    def empty() -> Capsules:
        return Capsules(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))

    @staticmethod
    def concatenate(parts: list[Capsules]) -> Capsules:
        return Capsules(np.concatenate([p.p0 for p in parts]), np.concatenate([p.p1 for p in parts]),
                        np.concatenate([p.radii for p in parts]))


def ellipsoid_cap_fraction(centres: np.ndarray, q_inv: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Fraction of each ellipsoid's volume where normal . x <= offset (exact, any orientation).

    An affine map takes the ellipsoid to the unit ball and the plane to one at signed
    distance s = (offset - n.c) / sqrt(n^T q^-1 n); the ball's part below it is (1+s)^2 (2-s) / 4.
    """
    support = np.sqrt(np.einsum("i,nij,j->n", normal, q_inv, normal))
    s = np.clip((offset - centres @ normal) / support, -1.0, 1.0)
    return (1.0 + s) ** 2 * (2.0 - s) / 4.0
