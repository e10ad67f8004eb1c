"""Line integrals through the specimen: the ideal projection before optics and detector.

For every sample of a detector grid the projector returns sum_m p_m L_m, the path
length L_m through each material m weighted by a per-material property p (mu for
absorption, k*delta for phase), in the lab's metric (so the load's strain is exact).

* The nested z-invariant parts (soft-tissue cylinder > periosteal cylinder > endosteal
  cylinder, each cut to its length) are evaluated exactly for every sample from
  per-column x-y intervals and per-row z intervals.
* Embedded objects (trabeculae, vessels, resorption pits) are exact convex intervals on
  the rays of their footprint; each replaces the material of the region it crosses
  (outside / soft tissue / cortex / marrow) with its own, region by region. Objects
  never overlap one another (phantom.py), so these replacements add up exactly.
* Lacunae (lacunar fluid replacing bone) are splatted: each ellipsoid's chord is a
  square root of a quadratic over its footprint, exact for parallel rays; in the cone
  beam the ray direction is frozen at the lacuna's centre (a relative error of order
  lacuna size / source distance: ~1e-3 of the chord for 20 um at 25 mm). Each footprint is sampled finely enough
  (>= 4 samples across) and averaged over the grid sample's area, so the splat carries
  the lacuna's exact volume whatever the pixel size.
* Canaliculi (only where resolved) are exact capsule intervals, sub-sampled likewise.
"""

from __future__ import annotations

import numpy as np

from .geometry import Rays
from .materials import MaterialId
from .remodeling import SpecimenAnatomy
from .shapes import (
    Capsules,
    capsule_interval,
    ellipsoid_interval,
    overlap,
    slab_interval,
)

REGIONS = (MaterialId.VACUUM, MaterialId.SOFT_TISSUE, MaterialId.BONE, MaterialId.MARROW)
"""Materials of the nested regions: outside the soft tissue, soft tissue, cortex, marrow."""
CHUNK_ELEMENTS = 2_000_000
"""Largest number of (object, sample) pairs evaluated at once (bounds temporary memory)."""
FOOTPRINT_SAMPLES = 4.0
"""Sub-samples across the narrowest footprint of a splatted lacuna."""
PATCH_SIZES = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256])
SUBSAMPLING = np.array([1, 2, 4, 8])


def specimen_line_integrals(state: SpecimenAnatomy, rays: Rays, properties: np.ndarray,
                            with_canaliculi: bool) -> np.ndarray:
    """(channels, rows, cols) float32 line integrals of ``properties`` (materials x channels)."""
    grid = rays.grid
    out = np.zeros((properties.shape[1], grid.rows, grid.cols))
    macro = _Macro(state, rays)
    _macro(macro, rays, properties, out)
    _objects(state, macro, rays, properties, out)
    pore = np.zeros(grid.rows * grid.cols)
    _splat_lacunae(state, rays, pore)
    if with_canaliculi:
        _splat_capsules(state.canaliculi(), rays, pore)
    delta = properties[MaterialId.PORE_FLUID] - properties[MaterialId.BONE]
    out += delta[:, None, None] * pore.reshape(grid.rows, grid.cols)[None]
    return out.astype(np.float32)


class _Macro:
    """Per-column x-y and per-row z intervals of the nested cylinders of one view."""

    def __init__(self, state: SpecimenAnatomy, rays: Rays) -> None:
        a_xy, d_xy = rays.columns()
        a_z, d_z = rays.row_z()
        self.xy = [e.xy_interval(a_xy[:, 0], a_xy[:, 1], d_xy[:, 0], d_xy[:, 1])
                   for e in (state.envelope, state.periosteum, state.endosteum)]
        self.z_env = slab_interval(a_z, d_z, -state.envelope_half_length, state.envelope_half_length)
        self.z_bone = slab_interval(a_z, d_z, -state.bone_half_length, state.bone_half_length)

    def intervals(self, rows: np.ndarray, cols: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """t-intervals of (envelope, periosteal, endosteal) cylinders for index arrays (broadcast)."""
        out = []
        for k, (x0, x1) in enumerate(self.xy):
            z0, z1 = self.z_env if k == 0 else self.z_bone
            out.append((np.maximum(x0[cols], z0[rows]), np.minimum(x1[cols], z1[rows])))
        return out


def _region_lengths(intervals: list[tuple[np.ndarray, np.ndarray]], t0: np.ndarray, t1: np.ndarray) -> list[np.ndarray]:
    """Parameter lengths of [t0, t1] in each region (outside, soft tissue, cortex, marrow)."""
    (e0, e1), (o0, o1), (i0, i1) = intervals
    whole = np.maximum(t1 - t0, 0.0)
    in_env, in_outer, in_inner = overlap(t0, t1, e0, e1), overlap(t0, t1, o0, o1), overlap(t0, t1, i0, i1)
    return [whole - in_env, in_env - in_outer, in_outer - in_inner, in_inner]


def _macro(macro: _Macro, rays: Rays, properties: np.ndarray, out: np.ndarray) -> None:
    p = properties
    weights = [p[MaterialId.SOFT_TISSUE], p[MaterialId.BONE] - p[MaterialId.SOFT_TISSUE],
               p[MaterialId.MARROW] - p[MaterialId.BONE]]
    grid = rays.grid
    cols = np.arange(grid.cols)
    step = max(1, CHUNK_ELEMENTS // grid.cols)
    for r0 in range(0, grid.rows, step):
        rows = np.arange(r0, min(grid.rows, r0 + step))
        length = rays.lab_lengths(rows, cols)
        for (t0, t1), w in zip(macro.intervals(rows[:, None], cols[None, :]), weights):
            chord = np.maximum(np.minimum(t1, 1.0) - np.maximum(t0, 0.0), 0.0) * length
            out[:, rows[0]:rows[-1] + 1] += w[:, None, None] * chord[None]


def _objects(state: SpecimenAnatomy, macro: _Macro, rays: Rays, properties: np.ndarray, out: np.ndarray) -> None:
    """Trabeculae, vessels and pits, each replacing region materials on its footprint."""
    region_p = properties[list(REGIONS)]

    def replace_all(material: MaterialId) -> np.ndarray:
        return properties[material][None, :] - region_p

    trab = replace_all(MaterialId.BONE)
    blood = replace_all(MaterialId.BLOOD)
    for i in range(len(state.trabeculae)):
        _add_object(rays, macro, out, trab, _capsule(state.trabeculae, i), _capsule_bounds(state.trabeculae, i))
    for i in range(len(state.vessels)):
        _add_object(rays, macro, out, blood, _capsule(state.vessels, i), _capsule_bounds(state.vessels, i))
    pits = state.pits
    q = pits.ellipsoids.q
    for i in range(len(pits)):
        deltas = np.zeros_like(region_p)
        deltas[2] = properties[pits.fill[i]] - properties[MaterialId.BONE]
        centre, half = pits.ellipsoids.centres[i], pits.ellipsoids.half_extents[i]

        def interval(a, d, centre=centre, qi=q[i]):
            return ellipsoid_interval(a, d, centre, qi)

        _add_object(rays, macro, out, deltas, interval, (centre - half, centre + half))


def _capsule(capsules: Capsules, i: int):
    p0, p1, r = capsules.p0[i], capsules.p1[i], capsules.radii[i]
    return lambda a, d: capsule_interval(a, d, p0, p1, r)


def _capsule_bounds(capsules: Capsules, i: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = capsules.bounds()
    return lo[i], hi[i]


def _footprint(rays: Rays, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice] | None:
    """Grid rows/cols covered by the projection of the box [lo, hi], or None if off the grid."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    proj = rays.project(corners)
    r0, r1 = int(np.floor(proj.rows.min())), int(np.ceil(proj.rows.max())) + 1
    c0, c1 = int(np.floor(proj.cols.min())), int(np.ceil(proj.cols.max())) + 1
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, rays.grid.rows), min(c1, rays.grid.cols)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _add_object(rays: Rays, macro: _Macro, out: np.ndarray, deltas: np.ndarray, interval, bounds) -> None:
    """Add one convex object's region-wise material replacement on its footprint."""
    window = _footprint(rays, *bounds)
    if window is None:
        return
    rows = np.arange(window[0].start, window[0].stop)
    cols = np.arange(window[1].start, window[1].stop)
    step = max(1, CHUNK_ELEMENTS // (8 * cols.size))
    for k in range(0, rows.size, step):
        rr = rows[k:k + step]
        a, d, length = rays.at(rr[:, None], cols[None, :])
        t0, t1 = interval(a, d)
        t0, t1 = np.maximum(t0, 0.0), np.minimum(t1, 1.0)
        pieces = _region_lengths(macro.intervals(rr[:, None], cols[None, :]), t0, t1)
        add = sum(deltas[r][:, None, None] * (piece * length)[None] for r, piece in enumerate(pieces))
        out[:, rr[0]:rr[-1] + 1, window[1]] += add


def _splat_lacunae(state: SpecimenAnatomy, rays: Rays, pore: np.ndarray) -> None:
    """Add each lacuna's chord (lab mm), averaged over grid samples, to ``pore`` (flat image)."""
    ell = state.lacunae
    if len(ell) == 0:
        return
    grid = rays.grid
    proj = rays.project(ell.centres)
    linear_inv = np.linalg.inv(rays.pose.linear)
    q = linear_inv.T @ ell.q @ linear_inv  # shape matrices in the lab frame
    d = proj.directions
    qd = (q @ d[:, :, None])[:, :, 0]
    g = np.sum(d * qd, axis=1)
    s2 = proj.scale_mm**2
    # Quadratic in grid steps: (d col, d row) <-> lab (x, z) displacements in the lacuna's plane;
    # K = (q d)(q d)^T - g q restricted to x and z.
    kcc = (qd[:, 0] ** 2 - g * q[:, 0, 0]) * s2
    kcr = (qd[:, 0] * qd[:, 2] - g * q[:, 0, 2]) * s2
    krr = (qd[:, 2] ** 2 - g * q[:, 2, 2]) * s2
    # Footprint ellipse: E = -K2 / g; half-widths sqrt(diag(E^-1)); narrowest width 2/sqrt(lambda_max(E)).
    ecc, ecr, err = -kcc / g, -kcr / g, -krr / g
    det = ecc * err - ecr**2
    half_c, half_r = np.sqrt(err / det), np.sqrt(ecc / det)
    lam_max = 0.5 * (ecc + err) + np.sqrt(0.25 * (ecc - err) ** 2 + ecr**2)
    narrow = 2.0 / np.sqrt(lam_max)
    visible = ((proj.cols + half_c > -0.5) & (proj.cols - half_c < grid.cols - 0.5)
               & (proj.rows + half_r > -0.5) & (proj.rows - half_r < grid.rows - 0.5))
    if not visible.any():
        return
    patch = PATCH_SIZES[np.minimum(np.searchsorted(PATCH_SIZES, np.ceil(2 * np.maximum(half_c, half_r) + 1)),
                                   PATCH_SIZES.size - 1)]
    sub = SUBSAMPLING[np.minimum(np.searchsorted(SUBSAMPLING, np.ceil(FOOTPRINT_SAMPLES / narrow)),
                                 SUBSAMPLING.size - 1)]
    params = np.column_stack([proj.cols, proj.rows, g, kcc, kcr, krr])
    by_row = np.argsort(proj.rows, kind="stable")  # chunks then cover narrow bands: small bincounts
    for size in np.unique(patch[visible]):
        for q_sub in np.unique(sub[visible & (patch == size)]):
            members = by_row[(visible & (patch == size) & (sub == q_sub))[by_row]]
            per_object = int(size * q_sub) ** 2
            step = max(1, CHUNK_ELEMENTS // per_object)
            for k0 in range(0, members.size, step):
                _splat_group(params[members[k0:k0 + step]], int(size), int(q_sub), grid.rows, grid.cols, pore)


def _splat_group(params: np.ndarray, size: int, q_sub: int, rows: int, cols: int, pore: np.ndarray) -> None:
    """Evaluate the chords of lacunae sharing a patch size and sub-sampling, and accumulate them."""
    start_c = np.rint(params[:, 0] - (size - 1) / 2).astype(np.int64)
    start_r = np.rint(params[:, 1] - (size - 1) / 2).astype(np.int64)
    pos = (np.arange(size)[:, None] + (np.arange(q_sub) + 0.5)[None, :] / q_sub - 0.5).ravel()
    dc = (start_c[:, None] + pos[None, :] - params[:, 0:1]).astype(np.float32)  # (n, size*q)
    dr = (start_r[:, None] + pos[None, :] - params[:, 1:2]).astype(np.float32)
    g, kcc, kcr, krr = (params[:, i].astype(np.float32) for i in (2, 3, 4, 5))
    # g + kcc dc^2 + 2 kcr dc dr + krr dr^2 as (object, row sample, col sample)
    value = (2 * kcr)[:, None, None] * dr[:, :, None] * dc[:, None, :]
    value += (kcc[:, None] * dc * dc)[:, None, :]
    value += (g[:, None] + krr[:, None] * dr * dr)[:, :, None]
    np.maximum(value, 0.0, out=value)
    np.sqrt(value, out=value)
    if q_sub > 1:  # sum each grid sample's sub-samples (strided adds beat a reduce over a short axis)
        value = sum(value[:, :, j::q_sub] for j in range(q_sub))
        value = sum(value[:, j::q_sub, :] for j in range(q_sub))
    value *= (2.0 / (g * q_sub * q_sub))[:, None, None]  # chord = 2 sqrt(.) / g, averaged over sub-samples
    _accumulate(pore, start_r, start_c, size, value, rows, cols)


def _accumulate(image: np.ndarray, start_r: np.ndarray, start_c: np.ndarray, size: int, value: np.ndarray,
                rows: int, cols: int) -> None:
    pix = np.arange(size)
    rr = start_r[:, None, None] + pix[None, :, None]
    cc = start_c[:, None, None] + pix[None, None, :]
    inside = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols) & (value > 0)
    flat = (rr * cols + cc)[inside]
    if flat.size:
        lo = int(flat.min())
        image[lo:lo + int(flat.max()) - lo + 1] += np.bincount(flat - lo, weights=value[inside])


def _splat_capsules(capsules: Capsules, rays: Rays, pore: np.ndarray) -> None:
    """Add exact capsule chords (lab mm), averaged over each grid sample's area, to ``pore``."""
    if len(capsules) == 0:
        return
    grid = rays.grid
    mid = 0.5 * (capsules.p0 + capsules.p1)
    proj = rays.project(mid)
    reach = (0.5 * capsules.lengths + capsules.radii) / proj.scale_mm
    visible = ((proj.cols + reach > -0.5) & (proj.cols - reach < grid.cols - 0.5)
               & (proj.rows + reach > -0.5) & (proj.rows - reach < grid.rows - 0.5))
    narrow = 2 * capsules.radii / proj.scale_mm
    patch = PATCH_SIZES[np.minimum(np.searchsorted(PATCH_SIZES, np.ceil(2 * reach + 1)), PATCH_SIZES.size - 1)]
    sub = SUBSAMPLING[np.minimum(np.searchsorted(SUBSAMPLING, np.ceil(4.0 / narrow)), SUBSAMPLING.size - 1)]
    by_row = np.argsort(proj.rows, kind="stable")
    for size in np.unique(patch[visible]):
        for q_sub in np.unique(sub[visible & (patch == size)]):
            members = by_row[(visible & (patch == size) & (sub == q_sub))[by_row]]
            step = max(1, CHUNK_ELEMENTS // (8 * int(size * q_sub) ** 2))
            for k0 in range(0, members.size, step):
                idx = members[k0:k0 + step]
                start_c = np.rint(proj.cols[idx] - (size - 1) / 2).astype(np.int64)
                start_r = np.rint(proj.rows[idx] - (size - 1) / 2).astype(np.int64)
                pos = (np.arange(size)[:, None] + (np.arange(q_sub) + 0.5)[None, :] / q_sub - 0.5).ravel()
                rr = start_r[:, None, None] + pos[None, :, None]
                cc = start_c[:, None, None] + pos[None, None, :]
                a, d, length = rays.at(rr, cc)
                t0, t1 = capsule_interval(a, d, capsules.p0[idx][:, None, None, :], capsules.p1[idx][:, None, None, :],
                                          capsules.radii[idx][:, None, None])
                chord = np.maximum(np.minimum(t1, 1.0) - np.maximum(t0, 0.0), 0.0) * length
                n = idx.size
                value = chord.reshape(n, size, q_sub, size, q_sub).mean(axis=(2, 4))
                _accumulate(pore, start_r, start_c, int(size), value, grid.rows, grid.cols)
