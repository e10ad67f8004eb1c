"""Bone remodelling between study days, and the specimen as it stands on one day.

Formation: every periosteal surface moves outward and every endosteal surface (the
marrow side of the cortex, and every trabecula) moves into the marrow at the mineral
apposition rate (MAR), i.e. the whole surface is mineralising (MS/BS = 1). The cortex
stays the region between two ellipses (semi-axes + MAR * day), so the formed volume is
exact: length * pi * ((a+p)(b+p) - ab + ab' - (a'-e)(b'-e)), plus the trabeculae's
capsule growth. For small offsets it equals MAR * surface * days to first order.

Resorption: pits appear as a Poisson process (``pits_per_day`` over the whole bone,
``endosteal_pit_fraction`` of them endosteal), each an ellipsoid centred on the surface
of its day, with its depth along the surface normal and its width along the surface
and the bone axis. A pit stays dug: from its day on, the bone inside it is replaced by
marrow (endosteal) or soft tissue (periosteal), including bone that apposition lays
down there later. Pits never overlap each other, vessels or trabeculae. The resorbed
volume is the exact volume of the pits inside that day's cortex (see volumes.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .materials import MaterialId
from .shapes import Capsules, Ellipse, Ellipsoids, segment_distance
from .volumes import ellipsoid_ring_volume, horizontal_capsule_ring_volume

if TYPE_CHECKING:
    from .phantom import Phantom

UM = 1e-3
PIT_ATTEMPTS = 200


@dataclass(frozen=True)
class Pits:
    """Every resorption pit of the study, in order of the day it is dug."""

    ellipsoids: Ellipsoids
    days: np.ndarray
    endosteal: np.ndarray
    """True for pits on the endosteal surface (filled with marrow), False periosteal (soft tissue)."""

    def __len__(self) -> int:
        return len(self.days)

    def upto(self, day: float) -> Pits:
        index = np.flatnonzero(self.days <= day)
        return Pits(self.ellipsoids.subset(index), self.days[index], self.endosteal[index])

    @property
    def fill(self) -> np.ndarray:
        """Material that replaces the bone in each pit."""
        return np.where(self.endosteal, int(MaterialId.MARROW), int(MaterialId.SOFT_TISSUE))


def draw_pits(phantom: Phantom, rng: np.random.Generator) -> Pits:
    """All pits up to the phantom's last study day (Poisson arrivals, uniform on the surfaces)."""
    c = phantom.config
    count = int(rng.poisson(c.pits_per_day * phantom.max_day))
    days = np.sort(rng.uniform(0.0, phantom.max_day, count))
    centres, semi, rotations, endosteal, kept_days = [], [], [], [], []
    vessels, trabeculae = phantom.vessels, phantom.trabeculae
    trab_radii = phantom.trabecula_radii_at(phantom.max_day)
    for day in days:
        for _attempt in range(PIT_ATTEMPTS):
            is_endo = bool(rng.random() < c.endosteal_pit_fraction)
            depth = rng.uniform(c.pit_depth_min_um, c.pit_depth_max_um) * UM
            half_width = rng.uniform(c.pit_width_min_um, c.pit_width_max_um) * UM / 2
            surface = phantom.endosteum_at(day) if is_endo else phantom.periosteum_at(day)
            phi = rng.uniform(0, 2 * np.pi)
            reach = max(depth, half_width)
            z = rng.uniform(-phantom.bone_half_length + reach + 0.02, phantom.bone_half_length - reach - 0.02)
            centre = np.array([surface.cx + surface.a * np.cos(phi), surface.cy + surface.b * np.sin(phi), z])
            normal = np.array([np.cos(phi) / surface.a, np.sin(phi) / surface.b, 0.0])
            normal /= np.linalg.norm(normal)
            if centres and np.any(np.linalg.norm(np.array(centres) - centre, axis=1)
                                  < np.array([s.max() for s in semi]) + reach + 2 * UM):
                continue
            if len(vessels) and np.any(
                segment_distance(centre, vessels.p0, vessels.p1) - vessels.radii < reach + 2 * UM
            ):
                continue
            if len(trabeculae) and np.any(
                segment_distance(centre, trabeculae.p0, trabeculae.p1) - trab_radii < reach + 2 * UM
            ):
                continue
            tangent = np.array([-normal[1], normal[0], 0.0])
            centres.append(centre)
            semi.append(np.array([depth, half_width, half_width]))
            rotations.append(np.column_stack([normal, tangent, [0.0, 0.0, 1.0]]))
            endosteal.append(is_endo)
            kept_days.append(day)
            break
    if not centres:
        empty = Ellipsoids(np.zeros((0, 3)), np.ones((0, 3)), np.zeros((0, 3, 3)))
        return Pits(empty, np.zeros(0), np.zeros(0, dtype=bool))
    return Pits(Ellipsoids(np.array(centres), np.array(semi), np.array(rotations)), np.array(kept_days),
                np.array(endosteal, dtype=bool))


@dataclass(frozen=True)
class RemodelingRecord:
    """What remodelling did from day 0 to ``day`` (volumes in mm^3, whole bone)."""

    day: float
    periosteal_mar_um_per_day: float
    endosteal_mar_um_per_day: float
    pits_per_day: float
    formed_periosteal_mm3: float
    formed_endosteal_mm3: float
    formed_trabecular_mm3: float
    resorbed_mm3: float
    pit_count: int
    surface_periosteal_mm2: float
    surface_endosteal_mm2: float
    surface_trabecular_mm2: float
    """Day-0 surfaces that formation acts on."""
    lacunae_added: int
    """Lacunae in bone formed since day 0."""
    lacunae_resorbed: int
    """Lacunae dug away by pits since day 0."""
    pit_resorbed_mm3: np.ndarray = field(repr=False)
    """Per pit (in Pits order), the bone it has removed by this day."""

    @property
    def formed_mm3(self) -> float:
        return self.formed_periosteal_mm3 + self.formed_endosteal_mm3 + self.formed_trabecular_mm3


@dataclass(frozen=True)
class SpecimenAnatomy:
    """The specimen on one study day, unloaded and at rest (specimen frame, mm)."""

    day: float
    envelope: Ellipse
    envelope_half_length: float
    periosteum: Ellipse
    endosteum: Ellipse
    bone_half_length: float
    trabeculae: Capsules
    vessels: Capsules
    vessel_is_transcortical: np.ndarray
    pits: Pits
    lacunae: Ellipsoids
    lacuna_index: np.ndarray
    """Indices of the existing lacunae in ``Phantom.lacunae``."""
    record: RemodelingRecord
    phantom: Phantom = field(repr=False)

    @property
    def cortical_area_mm2(self) -> float:
        return self.periosteum.area - self.endosteum.area

    def canaliculi(self) -> Capsules:
        """Canaliculi of the existing lacunae (only wanted where the voxel resolves them)."""
        return self.phantom.canaliculi(self.lacuna_index)

    def vessel_bone_volumes(self) -> np.ndarray:
        """Volume (mm^3) of each vessel inside the cortex."""
        out = self.vessels.volumes.copy()  # longitudinal canals lie inside the day-0 cortex
        for i in np.flatnonzero(self.vessel_is_transcortical):
            out[i] = horizontal_capsule_ring_volume(self.vessels.p0[i], self.vessels.p1[i], self.vessels.radii[i],
                                                    self.periosteum, self.endosteum)
        return out


def specimen_anatomy(phantom: Phantom, day: float) -> SpecimenAnatomy:
    """The specimen with the remodelling of days 0..``day`` applied."""
    if not 0.0 <= day <= phantom.max_day:
        raise ValueError(
            f"study day {day} is outside the phantom's 0 .. {phantom.max_day} days; raise sim.phantom.max_study_day"
        )
    outer, inner = phantom.periosteum_at(day), phantom.endosteum_at(day)
    trabeculae = phantom.trabeculae.with_radii(phantom.trabecula_radii_at(day))
    pits = phantom.pits.upto(day)
    alive = _lacunae_alive(phantom, outer, inner, day)
    alive0 = _lacunae_alive(phantom, phantom.periosteum, phantom.endosteum, 0.0)
    pit_volumes = np.array([
        ellipsoid_ring_volume(pits.ellipsoids.centres[i], pits.ellipsoids.rotations[i][:2, 0],
                              pits.ellipsoids.semi_axes[i], outer, inner)
        for i in range(len(pits))
    ])
    c = phantom.config
    length = 2 * phantom.bone_half_length
    record = RemodelingRecord(
        day=day,
        periosteal_mar_um_per_day=c.periosteal_mar_um_per_day,
        endosteal_mar_um_per_day=c.endosteal_mar_um_per_day,
        pits_per_day=c.pits_per_day,
        formed_periosteal_mm3=length * (outer.area - phantom.periosteum.area),
        formed_endosteal_mm3=length * (phantom.endosteum.area - inner.area),
        formed_trabecular_mm3=float(trabeculae.volumes.sum() - phantom.trabeculae.volumes.sum()),
        resorbed_mm3=float(pit_volumes.sum()),
        pit_count=len(pits),
        surface_periosteal_mm2=length * phantom.periosteum.perimeter,
        surface_endosteal_mm2=length * phantom.endosteum.perimeter,
        surface_trabecular_mm2=float(phantom.trabeculae.surfaces.sum()),
        lacunae_added=int(np.count_nonzero(alive & ~_shell_ok(phantom, phantom.periosteum, phantom.endosteum))),
        lacunae_resorbed=int(np.count_nonzero(alive0 & (phantom.lacuna_removed_day <= day))),
        pit_resorbed_mm3=pit_volumes,
    )
    index = np.flatnonzero(alive)
    return SpecimenAnatomy(
        day=day, envelope=phantom.envelope, envelope_half_length=phantom.envelope_half_length,
        periosteum=outer, endosteum=inner, bone_half_length=phantom.bone_half_length,
        trabeculae=trabeculae, vessels=phantom.vessels, vessel_is_transcortical=phantom.vessel_is_transcortical,
        pits=pits, lacunae=phantom.lacunae.ellipsoids.subset(index), lacuna_index=index, record=record,
        phantom=phantom,
    )


def _shell_ok(phantom: Phantom, outer: Ellipse, inner: Ellipse) -> np.ndarray:
    """Lacunae whose territory lies inside the cortex between ``inner`` and ``outer``."""
    centres, territory = phantom.lacunae.ellipsoids.centres, phantom.lacunae.territory
    return ((outer.clearance_inside(centres[:, 0], centres[:, 1]) >= territory)
            & (-inner.clearance_inside(centres[:, 0], centres[:, 1]) >= territory))


def _lacunae_alive(phantom: Phantom, outer: Ellipse, inner: Ellipse, day: float) -> np.ndarray:
    return _shell_ok(phantom, outer, inner) & (phantom.lacuna_removed_day > day)
