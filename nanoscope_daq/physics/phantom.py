"""The analytic mouse tibia: cortical shell, marrow, trabeculae, vessels, osteocyte lacunae.

Specimen frame (mm): z is the bone axis and the rotation axis; the origin lies on the
rotation axis at the centre of the field of view; x and y span the cross-section (at
rotation angle 0, x runs along detector columns and y along the beam).

Shapes (all implicit, so any voxel size can be sampled):

* soft tissue: an elliptic cylinder (muscle, skin) of length ``soft_tissue_length_mm``;
* cortical bone: the region between the periosteal and the endosteal ellipses, over
  ``bone_length_mm`` (both surfaces move with remodelling, see remodeling.py);
* marrow: inside the endosteal ellipse;
* trabeculae: capsules (rods) in the marrow of the metaphyseal end (+z). They keep a
  clearance from the endosteal surface at ``max_study_day`` and from each other, so
  every volume stays additive (free-standing rods: a simplification of real struts);
* vessels: capsules: longitudinal (Haversian-like) canals inside the day-0 cortex and
  transcortical canals running radially from the marrow through the cortex into the
  soft tissue; none overlap;
* osteocyte lacunae: ellipsoids with their long axis within ``lacuna_tilt_max_deg`` of
  the bone axis, turned randomly about it. Mouse cortical bone holds several 1e4
  lacunae per mm^3 of bone (synchrotron CT: Mader et al., Bone 57:142-154 (2013);
  desktop nano-CT: Hemmatian et al., PLoS ONE 12:e0182996 (2017)); the default
  6.0e4 mm^-3 sits in the 2-9e4 mm^-3 range of those reports. Each lacuna owns one
  cell of a jittered lattice (85 % of cells occupied, cell volume 0.85 / density), with
  its canaliculi inside that cell, so no two lacunae or canaliculi ever overlap and the
  lacunar volume is the exact sum of ellipsoid volumes (4/3 pi a b c). A lacuna exists
  on a given day when its whole territory (lacuna + canaliculi, a sphere of radius
  ``territory``) lies inside that day's bone and clear of vessels and of every
  resorption pit dug so far; lacunae are drawn in the bone of ``max_study_day`` too, so
  bone formed during the study gains osteocytes as the front passes them.
* canaliculi: ``canaliculi_per_lacuna`` capsules of ``canaliculus_diameter_um`` leaving
  each lacuna along its surface normal (touching it in one point), cut at the lacuna's
  cell. They are imaged and labelled only where the voxel size resolves them (voxel <=
  diameter); coarser, their volume stays in the bone matrix and is reported apart.

Everything is drawn from ``numpy.random.default_rng([seed, part])`` streams, one per
part, so changing one count leaves the other parts as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..config import PhantomConfig
from .remodeling import Pits, draw_pits
from .shapes import Capsules, Ellipse, Ellipsoids, segment_distance, segment_segment_distance

UM = 1e-3
"""One micrometre in mm."""
LATTICE_OCCUPANCY = 0.85
"""Fraction of lattice cells that hold a lacuna (breaks the lattice's regularity)."""
CLEARANCE_MM = 5 * UM
"""Gap kept between objects that must not touch."""
PLACEMENT_ATTEMPTS = 400
"""Random draws allowed per object before the phantom reports that it does not fit."""
CANALICULI_CHUNK = 16384
"""Lacunae whose canaliculi are generated at once (bounds temporary memory)."""


class _Stream:
    """Names of the independent random streams of the phantom."""

    VESSELS, TRABECULAE, LACUNAE, PITS = 1, 2, 3, 4


@dataclass(frozen=True)
class LacunaField:
    """Every lacuna that may exist during the study, with the cell that is its territory."""

    ellipsoids: Ellipsoids
    territory: np.ndarray
    """Radius (mm) of a sphere about the centre holding the lacuna and its canaliculi."""
    cell_angle: np.ndarray
    """Rotation (rad) about z of the cell's frame: cell coordinates are Rz(-angle) (x - cx, y - cy), z."""
    cell_lo: np.ndarray
    cell_hi: np.ndarray
    """Cell box corners (n, 3) in the cell frame."""


class Phantom:
    """The seeded static anatomy; ``remodeling.specimen_anatomy(phantom, day)`` gives a day's specimen."""

    def __init__(self, config: PhantomConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        c = config
        self.envelope = Ellipse(c.soft_tissue_centre_x_mm, c.soft_tissue_centre_y_mm,
                                c.soft_tissue_semi_axis_x_mm, c.soft_tissue_semi_axis_y_mm)
        self.envelope_half_length = c.soft_tissue_length_mm / 2
        self.periosteum = Ellipse(c.bone_centre_x_mm, c.bone_centre_y_mm,
                                  c.periosteal_semi_axis_x_mm, c.periosteal_semi_axis_y_mm)
        self.endosteum = Ellipse(c.bone_centre_x_mm, c.bone_centre_y_mm,
                                 c.endosteal_semi_axis_x_mm, c.endosteal_semi_axis_y_mm)
        self.bone_half_length = c.bone_length_mm / 2
        self.max_day = c.max_study_day
        self.periosteal_mar_mm = c.periosteal_mar_um_per_day * UM
        self.endosteal_mar_mm = c.endosteal_mar_um_per_day * UM
        self._check_dimensions()
        self.vessels, self.vessel_is_transcortical = self._place_vessels()
        self.trabeculae = self._place_trabeculae()
        self.lacunae = self._place_lacunae()
        self.pits: Pits = draw_pits(self, np.random.default_rng([seed, _Stream.PITS]))
        self.lacuna_removed_day = self._lacuna_removal_days()

    # -- surfaces over time ---------------------------------------------------------
    def periosteum_at(self, day: float) -> Ellipse:
        return self.periosteum.grown(self.periosteal_mar_mm * day)

    def endosteum_at(self, day: float) -> Ellipse:
        return self.endosteum.grown(-self.endosteal_mar_mm * day)

    def trabecula_radii_at(self, day: float) -> np.ndarray:
        return self.trabeculae.radii + self.endosteal_mar_mm * day

    @property
    def canaliculus_radius(self) -> float:
        return self.config.canaliculus_diameter_um * UM / 2

    def canaliculi_resolved(self, voxel_size_um: float) -> bool:
        """Canaliculi are imaged and labelled when a voxel is no larger than their diameter."""
        return self.config.canaliculi_per_lacuna > 0 and voxel_size_um <= self.config.canaliculus_diameter_um

    # -- checks ---------------------------------------------------------------------
    def _check_dimensions(self) -> None:
        c = self.config
        inner_end = self.endosteum_at(self.max_day)
        if min(inner_end.a, inner_end.b) <= 10 * UM:
            raise ValueError(
                f"phantom: endosteal apposition of {c.endosteal_mar_um_per_day} um/day closes the marrow cavity "
                f"before day {self.max_day}; lower endosteal_mar_um_per_day or max_study_day"
            )
        outer_end = self.periosteum_at(self.max_day)
        angles = np.linspace(0, 2 * np.pi, 721)
        rim_x, rim_y = outer_end.cx + outer_end.a * np.cos(angles), outer_end.cy + outer_end.b * np.sin(angles)
        if np.min(self.envelope.clearance_inside(rim_x, rim_y)) < 10 * UM:
            raise ValueError(
                "phantom: the bone (grown to max_study_day) reaches the soft-tissue surface; enlarge "
                "soft_tissue_semi_axis_x_mm/_y_mm or move soft_tissue_centre_x_mm/_y_mm"
            )
        thickness = min(c.periosteal_semi_axis_x_mm - c.endosteal_semi_axis_x_mm,
                        c.periosteal_semi_axis_y_mm - c.endosteal_semi_axis_y_mm)
        if c.pit_depth_max_um * UM >= thickness / 2:
            raise ValueError(
                f"sim.phantom.pit_depth_max_um ({c.pit_depth_max_um}) must stay below half the thinnest cortex "
                f"({thickness / 2 / UM:.0f} um)"
            )

    # -- vessels --------------------------------------------------------------------
    def _place_vessels(self) -> tuple[Capsules, np.ndarray]:
        """Longitudinal canals inside the day-0 cortex, then radial transcortical ones; none touch."""
        c = self.config
        rng = np.random.default_rng([self.seed, _Stream.VESSELS])
        p0s: list[np.ndarray] = []
        p1s: list[np.ndarray] = []
        radii: list[float] = []

        def clear_of_others(p0: np.ndarray, p1: np.ndarray, r: float) -> bool:
            if not radii:
                return True
            gaps = segment_segment_distance(p0, p1, np.array(p0s), np.array(p1s)) - np.array(radii) - r
            return bool(np.all(gaps >= CLEARANCE_MM))

        end_margin = min(0.1, 0.2 * self.bone_half_length)  # vessels keep clear of the bone's ends
        for _ in range(c.haversian_canal_count):
            for _attempt in range(PLACEMENT_ATTEMPTS):
                r = rng.uniform(c.haversian_diameter_min_um, c.haversian_diameter_max_um) * UM / 2
                length = min(rng.uniform(c.haversian_length_min_mm, c.haversian_length_max_mm),
                             2 * (self.bone_half_length - r - end_margin))
                reach = self.bone_half_length - r - end_margin
                z0 = rng.uniform(-reach, reach - length)
                x = rng.uniform(self.periosteum.cx - self.periosteum.a, self.periosteum.cx + self.periosteum.a)
                y = rng.uniform(self.periosteum.cy - self.periosteum.b, self.periosteum.cy + self.periosteum.b)
                inside = self.periosteum.clearance_inside(x, y) >= r + 2 * CLEARANCE_MM
                outside_marrow = -self.endosteum.clearance_inside(x, y) >= r + 2 * CLEARANCE_MM
                p0, p1 = np.array([x, y, z0]), np.array([x, y, z0 + length])
                if inside and outside_marrow and clear_of_others(p0, p1, r):
                    p0s.append(p0), p1s.append(p1), radii.append(r)
                    break
            else:
                raise ValueError("phantom: the Haversian canals do not fit in the cortex; lower haversian_canal_count")
        outer_end = self.periosteum_at(self.max_day)
        for _ in range(c.transcortical_canal_count):
            for _attempt in range(PLACEMENT_ATTEMPTS):
                r = rng.uniform(c.transcortical_diameter_min_um, c.transcortical_diameter_max_um) * UM / 2
                z = rng.uniform(-self.bone_half_length + end_margin, self.bone_half_length - end_margin)
                if c.trabecular_zone_start_mm - 0.1 <= z <= c.trabecular_zone_end_mm + 0.1:
                    continue
                psi = rng.uniform(0, 2 * np.pi)
                u = np.array([np.cos(psi), np.sin(psi)])
                centre = np.array([self.periosteum.cx, self.periosteum.cy])
                inner_reach = 0.85 / np.hypot(u[0] / self.endosteum.a, u[1] / self.endosteum.b)
                bone_reach = 1.0 / np.hypot(u[0] / outer_end.a, u[1] / outer_end.b)
                skin_reach = float(self.envelope.line_chords(np.array([centre[0]]), np.array([centre[1]]), *u)[1][0])
                outer_reach = 0.5 * (bone_reach + skin_reach)  # halfway into the soft tissue
                p0 = np.array([*(centre + inner_reach * u), z])
                p1 = np.array([*(centre + outer_reach * u), z])
                if self.envelope.clearance_inside(p1[0], p1[1]) < r + CLEARANCE_MM:
                    continue
                if clear_of_others(p0, p1, r):
                    p0s.append(p0), p1s.append(p1), radii.append(r)
                    break
            else:
                raise ValueError("phantom: the transcortical canals do not fit; lower transcortical_canal_count")
        kinds = np.array([False] * c.haversian_canal_count + [True] * c.transcortical_canal_count)
        if not radii:
            return Capsules.empty(), kinds
        return Capsules(np.array(p0s), np.array(p1s), np.array(radii)), kinds

    # -- trabeculae -----------------------------------------------------------------
    def _place_trabeculae(self) -> Capsules:
        """Rods in the marrow of the trabecular zone, clear of the last day's endosteum, pits and vessels."""
        c = self.config
        rng = np.random.default_rng([self.seed, _Stream.TRABECULAE])
        marrow_end = self.endosteum_at(self.max_day)
        growth = self.endosteal_mar_mm * self.max_day
        pit_reach = c.pit_depth_max_um * UM
        zone = (max(c.trabecular_zone_start_mm, -self.bone_half_length),
                min(c.trabecular_zone_end_mm, self.bone_half_length))
        p0s: list[np.ndarray] = []
        p1s: list[np.ndarray] = []
        radii: list[float] = []
        for _ in range(c.trabecula_count):
            for _attempt in range(PLACEMENT_ATTEMPTS):
                r = rng.uniform(c.trabecula_radius_min_um, c.trabecula_radius_max_um) * UM
                r_end = r + growth
                length = rng.uniform(c.trabecula_length_min_um, c.trabecula_length_max_um) * UM
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                mid = np.array([rng.uniform(marrow_end.cx - marrow_end.a, marrow_end.cx + marrow_end.a),
                                rng.uniform(marrow_end.cy - marrow_end.b, marrow_end.cy + marrow_end.b),
                                rng.uniform(*zone)])
                p0, p1 = mid - direction * length / 2, mid + direction * length / 2
                ends = np.array([p0, p1])
                need = r_end + pit_reach + 2 * CLEARANCE_MM
                if np.any(marrow_end.clearance_inside(ends[:, 0], ends[:, 1]) < need):
                    continue
                if np.any(ends[:, 2] - r_end < zone[0]) or np.any(ends[:, 2] + r_end > zone[1]):
                    continue
                if len(self.vessels) and np.any(
                    segment_segment_distance(p0, p1, self.vessels.p0, self.vessels.p1) - self.vessels.radii - r_end
                    < CLEARANCE_MM
                ):
                    continue
                if radii and np.any(
                    segment_segment_distance(p0, p1, np.array(p0s), np.array(p1s)) - (np.array(radii) + growth) - r_end
                    < CLEARANCE_MM
                ):
                    continue
                p0s.append(p0), p1s.append(p1), radii.append(r)
                break
            else:
                raise ValueError(
                    "phantom: the trabeculae do not fit in the marrow of the trabecular zone; lower trabecula_count "
                    "or their sizes, or widen trabecular_zone_start_mm .. trabecular_zone_end_mm"
                )
        if not radii:
            return Capsules.empty()
        return Capsules(np.array(p0s), np.array(p1s), np.array(radii))

    # -- lacunae --------------------------------------------------------------------
    def _place_lacunae(self) -> LacunaField:
        """One lacuna per occupied cell of a jittered lattice (each z slab turned and shifted at random),
        kept where it could lie in the bone of some study day, clear of the vessels."""
        c = self.config
        rng = np.random.default_rng([self.seed, _Stream.LACUNAE])
        long_max, mid_max = c.lacuna_long_semi_axis_max_um * UM, c.lacuna_mid_semi_axis_max_um * UM
        tilt = np.radians(c.lacuna_tilt_max_deg)
        half_z = long_max
        half_xy = np.sqrt((long_max * np.sin(tilt)) ** 2 + mid_max**2)
        cell_z = 2 * half_z + 4 * UM
        cell_volume = LATTICE_OCCUPANCY / (c.lacuna_density_per_mm3)
        cell_xy = np.sqrt(cell_volume / cell_z)
        if cell_xy < 2 * half_xy + 1 * UM:
            raise ValueError(
                f"sim.phantom.lacuna_density_per_mm3 = {c.lacuna_density_per_mm3:g} leaves lattice cells of "
                f"{cell_xy / UM:.1f} um, too small for lacunae up to {2 * half_xy / UM:.1f} um wide; "
                "lower the density or the lacuna sizes"
            )
        stub = (c.canaliculus_length_um * UM + 2 * self.canaliculus_radius) if c.canaliculi_per_lacuna else 0.0
        outer_end, inner_end = self.periosteum_at(self.max_day), self.endosteum_at(self.max_day)
        reach = np.hypot(outer_end.a, outer_end.b) + cell_xy
        n_slabs = int(np.floor(2 * self.bone_half_length / cell_z))
        z_start = -n_slabs * cell_z / 2
        n_side = int(np.ceil(2 * reach / cell_xy)) + 1
        iu, iv = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
        lo_u_list, lo_v_list, slab_list, angle_list = [], [], [], []
        for k in range(n_slabs):
            angle = rng.uniform(0, np.pi / 2)
            offset = rng.uniform(0, cell_xy, size=2)
            lo_u = (-reach + offset[0] + iu * cell_xy).ravel()
            lo_v = (-reach + offset[1] + iv * cell_xy).ravel()
            cu, cv = lo_u + cell_xy / 2, lo_v + cell_xy / 2
            x = outer_end.cx + np.cos(angle) * cu - np.sin(angle) * cv
            y = outer_end.cy + np.sin(angle) * cu + np.cos(angle) * cv
            near = (outer_end.clearance_inside(x, y) > -cell_xy) & (-inner_end.clearance_inside(x, y) > -cell_xy)
            near &= rng.random(near.size) < LATTICE_OCCUPANCY
            lo_u_list.append(lo_u[near]), lo_v_list.append(lo_v[near])
            slab_list.append(np.full(int(near.sum()), k)), angle_list.append(np.full(int(near.sum()), angle))
        lo_u, lo_v = np.concatenate(lo_u_list), np.concatenate(lo_v_list)
        slab, cell_angle = np.concatenate(slab_list), np.concatenate(angle_list)
        n = lo_u.size
        semi = np.column_stack([
            rng.uniform(c.lacuna_long_semi_axis_min_um, c.lacuna_long_semi_axis_max_um, n),
            rng.uniform(c.lacuna_mid_semi_axis_min_um, c.lacuna_mid_semi_axis_max_um, n),
            rng.uniform(c.lacuna_short_semi_axis_min_um, c.lacuna_short_semi_axis_max_um, n),
        ]) * UM
        rotations = _axis_frames(
            np.arccos(rng.uniform(np.cos(tilt), 1.0, n)), rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
        )
        cos_a, sin_a = np.cos(cell_angle), np.sin(cell_angle)
        to_cell = np.zeros((n, 3, 3))
        to_cell[:, 0, 0], to_cell[:, 0, 1], to_cell[:, 1, 0], to_cell[:, 1, 1] = cos_a, sin_a, -sin_a, cos_a
        to_cell[:, 2, 2] = 1.0
        half_cell = np.sqrt(np.einsum("nik,nk->ni", np.einsum("nij,njk->nik", to_cell, rotations) ** 2, semi**2))
        cell_lo = np.column_stack([lo_u, lo_v, z_start + slab * cell_z])
        cell_hi = cell_lo + np.array([cell_xy, cell_xy, cell_z])
        room = (cell_hi - cell_lo) - 2 * half_cell
        centre_cell = cell_lo + half_cell + rng.random((n, 3)) * np.maximum(room, 0.0)
        centres = np.column_stack([
            outer_end.cx + cos_a * centre_cell[:, 0] - sin_a * centre_cell[:, 1],
            outer_end.cy + sin_a * centre_cell[:, 0] + cos_a * centre_cell[:, 1],
            centre_cell[:, 2],
        ])
        territory = semi[:, 0] + stub + 0.5 * UM
        keep = np.all(room >= 0, axis=1)
        keep &= outer_end.clearance_inside(centres[:, 0], centres[:, 1]) >= territory
        keep &= -inner_end.clearance_inside(centres[:, 0], centres[:, 1]) >= territory
        keep &= np.abs(centres[:, 2]) <= self.bone_half_length - territory
        for i in range(len(self.vessels)):
            gap = segment_distance(centres, self.vessels.p0[i], self.vessels.p1[i]) - self.vessels.radii[i]
            keep &= gap >= territory
        index = np.flatnonzero(keep)
        return LacunaField(
            Ellipsoids(centres[index], semi[index], rotations[index]), territory[index], cell_angle[index],
            cell_lo[index], cell_hi[index],
        )

    def _lacuna_removal_days(self) -> np.ndarray:
        """Day each lacuna is dug away by a resorption pit (inf: never)."""
        removed = np.full(len(self.lacunae.ellipsoids), np.inf)
        centres, territory = self.lacunae.ellipsoids.centres, self.lacunae.territory
        pits = self.pits.ellipsoids
        for i in range(len(pits)):
            reach = pits.semi_axes[i].max() + territory.max()
            near = np.flatnonzero(np.all(np.abs(centres - pits.centres[i]) <= reach, axis=1))
            if near.size == 0:
                continue
            w = centres[near] - pits.centres[i]
            s = np.sqrt(np.einsum("ni,ij,nj->n", w, pits.q[i], w))
            hit = (s - 1.0) * pits.semi_axes[i].min() < territory[near]
            removed[near[hit]] = np.minimum(removed[near[hit]], self.pits.days[i])
        return removed

    @cached_property
    def canaliculus_seed(self) -> np.uint64:
        return np.uint64(np.random.default_rng([self.seed, 17]).integers(1, 2**63))

    def canaliculi(self, lacuna_index: np.ndarray) -> Capsules:
        """Canaliculi of the given lacunae (indices into ``lacunae``), identical whichever subset is asked."""
        lacuna_index = np.asarray(lacuna_index, dtype=np.int64)
        if self.config.canaliculi_per_lacuna == 0 or lacuna_index.size == 0:
            return Capsules.empty()
        parts = [self._canaliculi_of(lacuna_index[k:k + CANALICULI_CHUNK])[0]
                 for k in range(0, lacuna_index.size, CANALICULI_CHUNK)]
        return Capsules.concatenate(parts)

    @cached_property
    def canaliculus_volumes(self) -> np.ndarray:
        """Canalicular volume (mm^3) of each lacuna, exact (its capsules are disjoint)."""
        count = len(self.lacunae.ellipsoids)
        out = np.zeros(count)
        if self.config.canaliculi_per_lacuna == 0:
            return out
        for k in range(0, count, CANALICULI_CHUNK):
            index = np.arange(k, min(count, k + CANALICULI_CHUNK))
            capsules, owner = self._canaliculi_of(index)
            out[index] = np.bincount(owner, weights=capsules.volumes, minlength=index.size)
        return out

    def _canaliculi_of(self, lacuna_index: np.ndarray) -> tuple[Capsules, np.ndarray]:
        """Canaliculi of these lacunae and, for each, its lacuna's position in ``lacuna_index``."""
        field = self.lacunae
        ell = field.ellipsoids.subset(lacuna_index)
        u1, u2, u3 = (_hash_uniform(self.canaliculus_seed, lacuna_index, j) for j in range(3))
        spin = _random_rotations(u1, u2, u3)
        directions = _fibonacci_sphere(self.config.canaliculi_per_lacuna) @ np.swapaxes(spin, 1, 2)  # (n, k, 3)
        q = ell.q
        scale = 1.0 / np.sqrt(np.sum((directions @ q) * directions, axis=2))
        offset = directions * scale[..., None]  # surface point minus centre
        surface = ell.centres[:, None, :] + offset
        normal = offset @ q
        normal /= np.sqrt(np.sum(normal * normal, axis=2))[..., None]
        r = self.canaliculus_radius
        start = surface + r * normal
        # Length: as asked, but the capsule must stay inside the lacuna's cell.
        angle = field.cell_angle[lacuna_index][:, None]
        cos_a, sin_a = np.cos(angle), np.sin(angle)
        centre = self.periosteum
        sx, sy = start[..., 0] - centre.cx, start[..., 1] - centre.cy
        start_c = np.stack([cos_a * sx + sin_a * sy, -sin_a * sx + cos_a * sy, start[..., 2]], axis=-1)
        dir_c = np.stack([cos_a * normal[..., 0] + sin_a * normal[..., 1],
                          -sin_a * normal[..., 0] + cos_a * normal[..., 1], normal[..., 2]], axis=-1)
        lo = field.cell_lo[lacuna_index][:, None, :] + r
        hi = field.cell_hi[lacuna_index][:, None, :] - r
        with np.errstate(divide="ignore", invalid="ignore"):
            t_exit = np.where(dir_c > 0, (hi - start_c) / dir_c, np.where(dir_c < 0, (lo - start_c) / dir_c, np.inf))
        length = np.minimum(self.config.canaliculus_length_um * UM, t_exit.min(axis=2))
        ok = np.all((start_c >= lo) & (start_c <= hi), axis=2) & (length > r)
        # Keep the starts of one lacuna's canaliculi apart so that no two capsules touch.
        gram = surface @ np.swapaxes(surface, 1, 2)
        norms = np.einsum("nki,nki->nk", surface, surface)
        gaps2 = norms[:, :, None] + norms[:, None, :] - 2 * gram
        too_close = np.triu(gaps2 < (2 * r + 0.05 * UM) ** 2, k=1)
        ok &= ~np.any(too_close & ok[:, :, None], axis=1)
        end = start + normal * length[..., None]
        owner = np.broadcast_to(np.arange(lacuna_index.size)[:, None], ok.shape)[ok]
        return Capsules(start[ok], end[ok], np.full(int(ok.sum()), r)), owner


def _axis_frames(tilt: np.ndarray, azimuth: np.ndarray, spin: np.ndarray) -> np.ndarray:
    """Rotations whose first column (long axis) is tilted from z by ``tilt`` towards ``azimuth``."""
    long_axis = np.column_stack([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
    e1 = np.column_stack([np.cos(tilt) * np.cos(azimuth), np.cos(tilt) * np.sin(azimuth), -np.sin(tilt)])
    e2 = np.cross(long_axis, e1)
    mid = np.cos(spin)[:, None] * e1 + np.sin(spin)[:, None] * e2
    short = np.cross(long_axis, mid)
    return np.stack([long_axis, mid, short], axis=2)


def _fibonacci_sphere(k: int) -> np.ndarray:
    """k nearly evenly spread unit vectors."""
    i = np.arange(k) + 0.5
    z = 1 - 2 * i / k
    phi = np.pi * (1 + 5**0.5) * i
    rho = np.sqrt(1 - z * z)
    return np.column_stack([rho * np.cos(phi), rho * np.sin(phi), z])


def _random_rotations(u1: np.ndarray, u2: np.ndarray, u3: np.ndarray) -> np.ndarray:
    """Uniform random rotations from three uniforms each (Shoemake's quaternion method)."""
    a, b = np.sqrt(1 - u1), np.sqrt(u1)
    w, x = a * np.sin(2 * np.pi * u2), a * np.cos(2 * np.pi * u2)
    y, z = b * np.sin(2 * np.pi * u3), b * np.cos(2 * np.pi * u3)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def _hash_uniform(seed: np.uint64, index: np.ndarray, salt: int) -> np.ndarray:
    """Uniforms in [0, 1) from (seed, index, salt) by splitmix64: the same index always gives the same value."""
    with np.errstate(over="ignore"):
        x = index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + seed
        x = x + np.uint64(salt) * np.uint64(0xD1B54A32D192ED03)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)
