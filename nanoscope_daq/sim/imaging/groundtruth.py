"""ground_truth.h5: what the simulator knows about the specimen of one study day.

The volume is the reconstruction grid the scan implies: nz = detector rows, ny = nx =
detector columns of the binning, voxel size = Imager.voxel_size_um(binning), centred
on the rotation axis in the specimen frame at angle 0, unloaded and at rest
(geometry.py). Written in z slabs, so memory stays bounded whatever the size.

* ``/labels`` (uint8, z-y-x): the label of the material at each voxel centre
  (0 background, 1 soft tissue incl. marrow, 2 bone, 3 LCN/pore, 4 vessel).
* ``/attenuation`` (float32, z-y-x, 1/mm): mu at the effective energy of the last
  X-ray frame's high voltage (``energy_kev`` attribute), averaged over
  ``sim.phantom.ground_truth_supersampling``^3 sub-voxel samples (partial volume).
* ``/materials``: each material's name, label, mu (1/mm) and delta at that energy.
* ``/volumes`` (attributes, mm^3): exact volumes inside the voxel grid's box -- bone
  tissue (labels 2+3), bone matrix (2), LCN (3), vessels (4) -- and ``porosity`` =
  LCN / bone tissue; the same for the whole bone under ``/volumes/whole_bone``. Objects
  wholly inside the box count with their closed-form volumes (ellipsoids, capsules, the
  cortical ring's area by exact rows, pits and transcortical canals in the cortex by
  volumes.py); lacunae cut by one face of the box with the exact ellipsoid-cap formula;
  the few other objects cut by the box with a midpoint quadrature of >= 12 points
  across their smallest size (~0.5 % of those objects' own volumes).
* ``/lacunae``: every lacuna whose centre lies in the box (centres mm, semi-axes um,
  axis directions, volumes um^3), its ``count`` and ``density_per_mm3`` of bone tissue.
* ``/vessels``: all vessels (end points mm, radii um, transcortical flag).
* ``/remodeling``: what was applied from day 0 to this day (formed and resorbed
  volumes, rates, surfaces, lacunae gained and lost) and every pit so far.
* ``/provenance``: seed, the whole configuration (JSON), geometry, binning, the day
  asked for and the day applied (snapped like the frames), whether canaliculi are resolved.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ...physics.materials import LABEL_OF_MATERIAL, MATERIALS, Label, MaterialId, material_delta, property_table
from ...physics.raster import MaterialGrid
from ...physics.remodeling import SpecimenAnatomy
from ...physics.shapes import Capsules, Ellipsoids, ellipsoid_cap_fraction, segment_distance
from ...physics.volumes import ellipsoid_ring_volume, ring_area_in_rectangle

if TYPE_CHECKING:
    from .imager import Imager

SLAB_POINTS = 8_000_000
"""Sub-voxel samples rasterised at once (bounds memory)."""
QUADRATURE_POINTS_ACROSS = 12
QUADRATURE_CHUNK = 1_000_000


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box in the specimen frame (mm)."""

    lo: np.ndarray
    hi: np.ndarray

    def contains_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.all((lo >= self.lo) & (hi <= self.hi), axis=-1)

    def misses_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.any((hi <= self.lo) | (lo >= self.hi), axis=-1)

    def contains(self, points: np.ndarray) -> np.ndarray:
        return np.all((points >= self.lo) & (points <= self.hi), axis=-1)


def grid_axes(imager: Imager, binning: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Voxel-centre coordinates (x, y, z in mm) of the ground-truth grid, and the voxel size (mm)."""
    rows, cols = imager.frame_shape(binning)
    v = imager.sample_pitch_mm(binning)
    grid = imager.grid(binning, 0)
    scale = v / (grid.pitch_mm * imager.config.sim.detector.projection_supersampling)
    x0, z0 = grid.x_offset_mm * scale, grid.z_offset_mm * scale
    xs = x0 + (np.arange(cols) + 0.5 - cols / 2) * v
    ys = (np.arange(cols) + 0.5 - cols / 2) * v
    zs = z0 + (np.arange(rows) + 0.5 - rows / 2) * v
    return xs, ys, zs, v


def imaged_box(imager: Imager, binning: int) -> Box:
    """The box the ground-truth grid (the reconstruction grid) of ``binning`` covers, voxel faces included."""
    xs, ys, zs, v = grid_axes(imager, binning)
    return Box(np.array([xs[0], ys[0], zs[0]]) - v / 2, np.array([xs[-1], ys[-1], zs[-1]]) + v / 2)


def write_ground_truth(path: Path, imager: Imager, state: SpecimenAnatomy, binning: int,
                       day_requested: float | None = None) -> None:
    """Rasterise ``state`` on the grid of ``binning`` and write everything known about it to ``path``."""
    xs, ys, zs, v = grid_axes(imager, binning)
    voxel_um = v * 1e3
    phantom = state.phantom
    resolved = phantom.canaliculi_resolved(voxel_um)
    canaliculi = state.canaliculi() if resolved else None
    energy = imager.energy_kev(imager.last_kv)
    mu = property_table(energy, with_phase=False)[:, 0].astype(np.float32)
    s = phantom.config.ground_truth_supersampling
    box = imaged_box(imager, binning)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        shape = (zs.size, ys.size, xs.size)
        chunks = (1, min(ys.size, 256), min(xs.size, 256))
        labels = h5.create_dataset("labels", shape, np.uint8, chunks=chunks, compression="gzip", compression_opts=1)
        atten = h5.create_dataset("attenuation", shape, np.float32, chunks=chunks, compression="gzip",
                                  compression_opts=1)
        slab = max(1, SLAB_POINTS // (xs.size * ys.size * s**3))
        sub = (np.arange(s) + 0.5) / s - 0.5
        centres = MaterialGrid(state, xs, ys, canaliculi)
        fine = MaterialGrid(state, (xs[:, None] + sub[None, :] * v).ravel(), (ys[:, None] + sub[None, :] * v).ravel(),
                            canaliculi)
        for k0 in range(0, zs.size, slab):
            z = zs[k0:k0 + slab]
            labels[k0:k0 + z.size] = LABEL_OF_MATERIAL[centres.slab(z)]
            mu_fine = mu[fine.slab((z[:, None] + sub[None, :] * v).ravel())]
            atten[k0:k0 + z.size] = _block_mean(mu_fine, s)
        labels.attrs["voxel_size_um"] = voxel_um
        labels.attrs["codes"] = json.dumps({label.name.lower(): int(label) for label in Label})
        labels.attrs["axes"] = "z-y-x, specimen frame at angle 0, unloaded, at rest (see geometry.py)"
        atten.attrs["voxel_size_um"] = voxel_um
        atten.attrs["units"] = "1/mm"
        atten.attrs["energy_kev"] = energy
        atten.attrs["supersampling"] = s
        h5.attrs["voxel_size_um"] = voxel_um
        h5.attrs["day"] = state.day
        h5.attrs["grid_origin_mm"] = np.array([xs[0], ys[0], zs[0]])
        h5.attrs["grid_note"] = "grid_origin_mm is the centre of voxel (0, 0, 0) as (x, y, z)"
        _write_materials(h5.create_group("materials"), energy, mu)
        volumes = box_volumes(state, box, canaliculi)
        whole = whole_bone_volumes(state, canaliculi)
        _write_volumes(h5.create_group("volumes"), volumes, whole)
        _write_lacunae(h5.create_group("lacunae"), state, box, volumes)
        _write_vessels(h5.create_group("vessels"), state)
        _write_remodeling(h5.create_group("remodeling"), state)
        prov = h5.create_group("provenance")
        prov.attrs["seed"] = imager.config.sim.seed
        prov.attrs["config_json"] = json.dumps(dataclasses.asdict(imager.config), default=str)
        prov.attrs["geometry"] = imager.geometry.kind
        prov.attrs["contrast"] = imager.config.geometry.contrast
        prov.attrs["binning"] = binning
        prov.attrs["day_applied"] = state.day
        if day_requested is not None:
            prov.attrs["day_requested"] = day_requested
        prov.attrs["canaliculi_resolved"] = resolved
        prov.attrs["generator"] = "nanoscope_daq.sim.imaging"


def _block_mean(fine: np.ndarray, s: int) -> np.ndarray:
    """Mean over s x s x s blocks (strided adds: faster than reducing short axes)."""
    total = sum(fine[i::s, j::s, k::s] for i in range(s) for j in range(s) for k in range(s))
    return (total / s**3).astype(np.float32)


def _write_materials(group: h5py.Group, energy: float, mu: np.ndarray) -> None:
    group.attrs["energy_kev"] = energy
    group["name"] = np.array([MATERIALS[m].name for m in MaterialId], dtype=h5py.string_dtype())
    group["label"] = LABEL_OF_MATERIAL
    group["mu_per_mm"] = mu
    group["delta"] = np.array([material_delta(m, energy) for m in MaterialId])


def _write_volumes(group: h5py.Group, box: dict[str, float], whole: dict[str, float]) -> None:
    group.attrs["note"] = "mm^3 inside the voxel grid's box; porosity = LCN / bone tissue (labels 3 / (2 + 3))"
    for key, value in box.items():
        group.attrs[key] = value
    sub = group.create_group("whole_bone")
    for key, value in whole.items():
        sub.attrs[key] = value


def _write_lacunae(group: h5py.Group, state: SpecimenAnatomy, box: Box, volumes: dict[str, float]) -> None:
    ell = state.lacunae
    inside = np.flatnonzero(box.contains(ell.centres))
    sub = ell.subset(inside)
    group["centres_mm"] = sub.centres
    group["semi_axes_um"] = sub.semi_axes * 1e3
    group["axes"] = sub.rotations
    group["volumes_um3"] = sub.volumes * 1e9
    group["phantom_index"] = state.lacuna_index[inside]
    group.attrs["count"] = inside.size
    tissue = volumes["bone_tissue_mm3"]
    group.attrs["density_per_mm3"] = inside.size / tissue if tissue > 0 else 0.0
    group.attrs["note"] = "lacunae whose centre lies in the grid's box; axes columns: long, mid, short"


def _write_vessels(group: h5py.Group, state: SpecimenAnatomy) -> None:
    group["p0_mm"] = state.vessels.p0
    group["p1_mm"] = state.vessels.p1
    group["radius_um"] = state.vessels.radii * 1e3
    group["transcortical"] = state.vessel_is_transcortical
    group["bone_volume_mm3"] = state.vessel_bone_volumes()


def _write_remodeling(group: h5py.Group, state: SpecimenAnatomy) -> None:
    record = state.record
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if not isinstance(value, np.ndarray):
            group.attrs[f.name] = value
    group.attrs["formed_mm3"] = record.formed_mm3
    group.attrs["note"] = "whole bone, day 0 to this day; formed = apposition on every surface, resorbed = pits"
    pits = state.pits
    p = group.create_group("pits")
    p["centres_mm"] = pits.ellipsoids.centres
    p["semi_axes_um"] = pits.ellipsoids.semi_axes * 1e3
    p["axes"] = pits.ellipsoids.rotations
    p["day"] = pits.days
    p["endosteal"] = pits.endosteal
    p["resorbed_mm3"] = record.pit_resorbed_mm3


# -- exact volumes ------------------------------------------------------------------
def whole_bone_volumes(state: SpecimenAnatomy, canaliculi: Capsules | None) -> dict[str, float]:
    """Volumes (mm^3) of the whole bone, closed form (see module docstring)."""
    length = 2 * state.bone_half_length
    cortex = length * state.cortical_area_mm2
    tissue = (cortex + state.trabeculae.volumes.sum() - state.record.resorbed_mm3
              - state.vessel_bone_volumes().sum())
    lcn = state.lacunae.volumes.sum() + (canaliculi.volumes.sum() if canaliculi is not None else 0.0)
    unresolved = 0.0 if canaliculi is not None else state.phantom.canaliculus_volumes[state.lacuna_index].sum()
    return _summary(tissue, lcn, state.vessels.volumes.sum(), len(state.lacunae), unresolved)


def resorbed_in_box(before: SpecimenAnatomy, after: SpecimenAnatomy, box: Box) -> float:
    """Bone (mm^3) inside ``box`` on ``before``'s day that is no longer bone on ``after``'s: what resorption removed
    as two images of the box see it.

    Only the pits dug after ``before``'s day count, each with the bone of ``before``'s cortex inside it (pits never
    touch vessels, trabeculae or each other; lacunae inside them are bone tissue). Bone that apposition would have
    laid inside a pit after ``before``'s day was never there to remove: the record's ``pit_resorbed_mm3`` counts it
    (the pit against that day's cortex), an image cannot.
    """
    if after.day < before.day:
        raise ValueError(f"the later day ({after.day}) must not precede the earlier ({before.day})")
    new = np.flatnonzero(after.pits.days > before.day)
    pits = after.pits.ellipsoids.subset(new)
    in_cortex_before = np.array([
        ellipsoid_ring_volume(pits.centres[i], pits.rotations[i][:2, 0], pits.semi_axes[i], before.periosteum,
                              before.endosteum)
        for i in range(len(pits))
    ])
    return float(_ellipsoid_volumes(pits, box, in_cortex_before, _cortex_test(before)).sum())


def box_volumes(state: SpecimenAnatomy, box: Box, canaliculi: Capsules | None) -> dict[str, float]:
    """Volumes (mm^3) inside ``box``: closed forms for objects inside it, quadrature for those it cuts."""
    z_overlap = max(0.0, min(box.hi[2], state.bone_half_length) - max(box.lo[2], -state.bone_half_length))
    cortex = z_overlap * ring_area_in_rectangle(state.periosteum, state.endosteum, box.lo[0], box.hi[0],
                                                box.lo[1], box.hi[1])
    in_cortex = _cortex_test(state)
    trab = _capsule_volumes(state.trabeculae, box, state.trabeculae.volumes, None)
    pits = state.pits.ellipsoids
    pit_bone = _ellipsoid_volumes(pits, box, state.record.pit_resorbed_mm3, in_cortex)
    vessel_bone = _capsule_volumes(state.vessels, box, state.vessel_bone_volumes(), in_cortex)
    vessel_all = _capsule_volumes(state.vessels, box, state.vessels.volumes, None)
    lacunae = _lacuna_volumes(state.lacunae, box)
    lcn = lacunae.sum()
    if canaliculi is not None and len(canaliculi):
        lcn += _capsule_volumes(canaliculi, box, canaliculi.volumes, None).sum()
    tissue = cortex + trab.sum() - pit_bone.sum() - vessel_bone.sum()
    count = int(np.count_nonzero(box.contains(state.lacunae.centres)))
    return _summary(tissue, lcn, vessel_all.sum(), count, 0.0)


def _summary(tissue: float, lcn: float, vessels: float, count: int, unresolved: float) -> dict[str, float]:
    return {
        "bone_tissue_mm3": float(tissue),
        "bone_matrix_mm3": float(tissue - lcn),
        "lcn_mm3": float(lcn),
        "vessel_mm3": float(vessels),
        "porosity": float(lcn / tissue) if tissue > 0 else 0.0,
        "lacunae_count": count,
        "unresolved_canaliculi_mm3": float(unresolved),
    }


def _cortex_test(state: SpecimenAnatomy):
    def inside(points: np.ndarray) -> np.ndarray:
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        return ((state.periosteum.scale_of(x, y) <= 1) & (state.endosteum.scale_of(x, y) > 1)
                & (np.abs(z) <= state.bone_half_length))

    return inside


def _quadrature(inside, lo: np.ndarray, hi: np.ndarray, box: Box, size: float) -> float:
    """Midpoint-rule volume of {inside} within [lo, hi] cut to the box."""
    lo, hi = np.maximum(lo, box.lo), np.minimum(hi, box.hi)
    if np.any(hi <= lo):
        return 0.0
    h = size / QUADRATURE_POINTS_ACROSS
    counts = np.maximum(np.ceil((hi - lo) / h).astype(int), 1)
    steps = (hi - lo) / counts
    axes = [lo[i] + (np.arange(counts[i]) + 0.5) * steps[i] for i in range(3)]
    xx, yy = np.meshgrid(axes[0], axes[1], indexing="ij")
    layer = np.column_stack([xx.ravel(), yy.ravel()])
    per_chunk = max(1, QUADRATURE_CHUNK // layer.shape[0])
    total = 0
    for k in range(0, axes[2].size, per_chunk):
        z = axes[2][k:k + per_chunk]
        pts = np.column_stack([np.tile(layer, (z.size, 1)), np.repeat(z, layer.shape[0])])
        total += int(np.count_nonzero(inside(pts)))
    return float(total * np.prod(steps))


def _capsule_volumes(caps: Capsules, box: Box, exact: np.ndarray, region) -> np.ndarray:
    """Per capsule: ``exact`` if inside the box, 0 if outside, else quadrature (within ``region``)."""
    if len(caps) == 0:
        return np.zeros(0)
    lo, hi = caps.bounds()
    out = np.where(box.contains_box(lo, hi), exact, 0.0)
    for i in np.flatnonzero(~box.contains_box(lo, hi) & ~box.misses_box(lo, hi)):
        p0, p1, r = caps.p0[i], caps.p1[i], caps.radii[i]

        def inside(points, p0=p0, p1=p1, r=r):
            hit = segment_distance(points, p0, p1) <= r
            return hit & region(points) if region is not None else hit

        out[i] = _quadrature(inside, lo[i], hi[i], box, 2 * r)
    return out


def _ellipsoid_volumes(ell: Ellipsoids, box: Box, exact: np.ndarray, region) -> np.ndarray:
    if len(ell) == 0:
        return np.zeros(0)
    lo, hi = ell.centres - ell.half_extents, ell.centres + ell.half_extents
    out = np.where(box.contains_box(lo, hi), exact, 0.0)
    q = ell.q
    for i in np.flatnonzero(~box.contains_box(lo, hi) & ~box.misses_box(lo, hi)):
        def inside(points, c=ell.centres[i], qi=q[i]):
            w = points - c
            hit = np.einsum("ni,ij,nj->n", w, qi, w) <= 1
            return hit & region(points) if region is not None else hit

        out[i] = _quadrature(inside, lo[i], hi[i], box, 2 * ell.semi_axes[i].min())
    return out


def _lacuna_volumes(ell: Ellipsoids, box: Box) -> np.ndarray:
    """Lacunar volume in the box per lacuna: exact inside, exact cap when one face cuts, else quadrature."""
    if len(ell) == 0:
        return np.zeros(0)
    lo, hi = ell.centres - ell.half_extents, ell.centres + ell.half_extents
    volumes = ell.volumes
    out = np.where(box.contains_box(lo, hi), volumes, 0.0)
    cut = np.flatnonzero(~box.contains_box(lo, hi) & ~box.misses_box(lo, hi))
    if cut.size == 0:
        return out
    q_inv = np.linalg.inv(ell.q[cut])
    faces_hit = (lo[cut] < box.lo) | (hi[cut] > box.hi)  # (n, 3): which axes' faces cut
    below = lo[cut] < box.lo
    single = faces_hit.sum(axis=1) == 1
    for axis in range(3):
        chosen = np.flatnonzero(single & faces_hit[:, axis])
        if chosen.size == 0:
            continue
        normal = np.zeros(3)
        normal[axis] = 1.0
        fraction = np.empty(chosen.size)
        low_side = below[chosen, axis]
        centres = ell.centres[cut[chosen]]
        # below the low face: keep x >= lo, i.e. 1 - fraction(x <= lo); above the high face: fraction(x <= hi)
        f_lo = ellipsoid_cap_fraction(centres, q_inv[chosen], normal, box.lo[axis])
        f_hi = ellipsoid_cap_fraction(centres, q_inv[chosen], normal, box.hi[axis])
        fraction[:] = np.where(low_side, 1.0 - f_lo, f_hi)
        out[cut[chosen]] = volumes[cut[chosen]] * fraction
    q = ell.q
    for j in np.flatnonzero(~single):
        i = cut[j]

        def inside(points, c=ell.centres[i], qi=q[i]):
            w = points - c
            return np.einsum("ni,ij,nj->n", w, qi, w) <= 1

        out[i] = _quadrature(inside, lo[i], hi[i], box, 2 * ell.semi_axes[i].min())
    return out
