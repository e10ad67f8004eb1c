"""The specimen's material at the points of a regular grid (for labels and attenuation).

Same precedence as the projector: nested regions (outside, soft tissue, cortex,
marrow), then trabeculae (bone), pits (their fill replaces cortex), vessels (blood),
lacunae and canaliculi (pore fluid in bone). Objects are painted only inside their
bounding boxes, vectorised over many objects at once, so the cost follows the grid
size plus the objects' volumes, not their count times the grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .materials import MaterialId
from .remodeling import SpecimenAnatomy
from .shapes import Capsules, Ellipsoids, segment_distance

CHUNK_POINTS = 2_000_000
CHUNK_OBJECTS = 50_000


class _Family:
    """Objects of one kind painted with one material: boxes sorted by their lowest z."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, inside, material: int, only: int | None) -> None:
        order = np.argsort(lo[:, 2], kind="stable")
        self.lo, self.hi, self.order = lo[order], hi[order], order
        self.tallest = float((hi[:, 2] - lo[:, 2]).max()) if len(lo) else 0.0
        self.inside, self.material, self.only = inside, material, only

    def paint(self, out: np.ndarray, axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        zs = axes[2]
        first = np.searchsorted(self.lo[:, 2], zs[0] - self.tallest, side="left")
        last = np.searchsorted(self.lo[:, 2], zs[-1], side="right")
        if last <= first:
            return
        chosen = slice(first, last)
        original = self.order[chosen]

        def inside(index: np.ndarray, points: np.ndarray) -> np.ndarray:
            return self.inside(original[index], points)

        paint(out, axes, self.lo[chosen], self.hi[chosen], inside, self.material, self.only)


class MaterialGrid:
    """Materials on the grid spanned by uniformly spaced, increasing x and y axes, slab by slab in z.

    The cross-section of the nested cylinders is z-invariant: it is computed once and
    copied into every slab; objects are then painted where they reach the slab.
    """

    def __init__(self, state: SpecimenAnatomy, xs: np.ndarray, ys: np.ndarray, canaliculi: Capsules | None = None):
        self.state, self.xs, self.ys = state, xs, ys
        x2, y2 = np.meshgrid(xs, ys)
        in_env = state.envelope.scale_of(x2, y2) <= 1.0
        in_outer = state.periosteum.scale_of(x2, y2) <= 1.0
        in_inner = state.endosteum.scale_of(x2, y2) <= 1.0
        self.soft = np.where(in_env, np.uint8(MaterialId.SOFT_TISSUE), np.uint8(MaterialId.VACUUM))
        self.with_bone = np.where(in_inner, np.uint8(MaterialId.MARROW),
                                  np.where(in_outer, np.uint8(MaterialId.BONE), self.soft))
        families = [_Family(*state.trabeculae.bounds(), _capsule_test(state.trabeculae), MaterialId.BONE, None)]
        pits = state.pits.ellipsoids
        for fill in (MaterialId.MARROW, MaterialId.SOFT_TISSUE):
            chosen = pits.subset(np.flatnonzero(state.pits.fill == fill))
            families.append(_Family(chosen.centres - chosen.half_extents, chosen.centres + chosen.half_extents,
                                    _ellipsoid_test(chosen), fill, MaterialId.BONE))
        families.append(_Family(*state.vessels.bounds(), _capsule_test(state.vessels), MaterialId.BLOOD, None))
        lac = state.lacunae
        families.append(_Family(lac.centres - lac.half_extents, lac.centres + lac.half_extents, _ellipsoid_test(lac),
                                MaterialId.PORE_FLUID, MaterialId.BONE))
        if canaliculi is not None and len(canaliculi):
            families.append(_Family(*canaliculi.bounds(), _capsule_test(canaliculi), MaterialId.PORE_FLUID,
                                    MaterialId.BONE))
        self.families = [f for f in families if len(f.lo)]

    def slab(self, zs: np.ndarray) -> np.ndarray:
        """uint8 MaterialId at every (z, y, x) for these z (uniformly spaced, increasing)."""
        state = self.state
        out = np.empty((zs.size, self.ys.size, self.xs.size), dtype=np.uint8)
        for k, z in enumerate(zs):
            if abs(z) <= state.bone_half_length:
                out[k] = self.with_bone
            elif abs(z) <= state.envelope_half_length:
                out[k] = self.soft
            else:
                out[k] = MaterialId.VACUUM
        for family in self.families:
            family.paint(out, (self.xs, self.ys, zs))
        return out


def _ellipsoid_test(ell: Ellipsoids) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    q = ell.q

    def inside(index: np.ndarray, points: np.ndarray) -> np.ndarray:
        w = points - ell.centres[index][:, None, :]
        return np.einsum("nmi,nij,nmj->nm", w, q[index], w) <= 1.0

    return inside


def _capsule_test(caps: Capsules) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def inside(index: np.ndarray, points: np.ndarray) -> np.ndarray:
        d = segment_distance(points, caps.p0[index][:, None, :], caps.p1[index][:, None, :])
        return d <= caps.radii[index][:, None]

    return inside


def paint(out: np.ndarray, axes: tuple[np.ndarray, np.ndarray, np.ndarray], lo: np.ndarray, hi: np.ndarray,
          inside: Callable[[np.ndarray, np.ndarray], np.ndarray], material: int, only: int | None = None) -> None:
    """Set ``material`` at grid points inside objects (boxes lo..hi, xyz), optionally only over ``only``."""
    if len(lo) == 0:
        return
    xs, ys, zs = axes
    origin = np.array([xs[0], ys[0], zs[0]])
    step = np.array([_step(xs), _step(ys), _step(zs)])
    count = np.array([xs.size, ys.size, zs.size])
    first = np.maximum(np.ceil((lo - origin) / step - 1e-9).astype(np.int64), 0)
    last = np.minimum(np.floor((hi - origin) / step + 1e-9).astype(np.int64), count - 1)
    sizes = last - first + 1
    live = np.flatnonzero(np.all(sizes > 0, axis=1))
    if live.size == 0:
        return
    live = live[np.argsort(np.prod(sizes[live], axis=1))]  # similar boxes share a chunk: little padding
    k = 0
    while k < live.size:
        # The chunk's padded box is the running maximum of its boxes; stop before it holds too many points.
        running = np.maximum.accumulate(sizes[live[k:k + CHUNK_OBJECTS]], axis=0)
        cost = np.arange(1, running.shape[0] + 1) * np.prod(running, axis=1)
        end = k + max(1, int(np.searchsorted(cost, CHUNK_POINTS, side="right")))
        _paint_chunk(out, origin, step, count, first[live[k:end]], sizes[live[k:end]], running[end - k - 1],
                     live[k:end], inside, material, only)
        k = end


def _step(axis: np.ndarray) -> float:
    return float(axis[1] - axis[0]) if axis.size > 1 else 1.0


def _paint_chunk(out, origin, step, count, first, sizes, box, index, inside, material, only) -> None:
    bx, by, bz = (int(v) for v in box)
    oz, oy, ox = np.meshgrid(np.arange(bz), np.arange(by), np.arange(bx), indexing="ij")
    offsets = np.stack([ox.ravel(), oy.ravel(), oz.ravel()], axis=1)  # (m, 3) xyz
    idx = first[:, None, :] + offsets[None, :, :]
    valid = np.all(offsets[None, :, :] < sizes[:, None, :], axis=2)
    points = origin + idx * step
    hit = inside(index, points) & valid
    ix, iy, iz = idx[..., 0][hit], idx[..., 1][hit], idx[..., 2][hit]
    if only is not None:
        keep = out[iz, iy, ix] == only
        ix, iy, iz = ix[keep], iy[keep], iz[keep]
    out[iz, iy, ix] = material
