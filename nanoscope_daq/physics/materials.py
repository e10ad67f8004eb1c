"""X-ray optical constants of the tissues in the phantom, from xraydb.

Compositions are elemental mass fractions from ICRU Report 44 (1989) / Woodard & White
(Br. J. Radiol. 59, 1986): adult cortical bone (the mineralised matrix: hydroxyapatite
in collagen and water), skeletal muscle (soft tissue), red marrow and whole blood. The
fluid in lacunae and canaliculi is taken as water. xraydb supplies the attenuation
coefficient (photoabsorption + scattering) and the refractive index decrement delta.

The space around the specimen counts as vacuum here: the air along the beam path is
accounted for once, in the source spectrum (see spectrum.py), so flats and projections
see the same air.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xraydb


class MaterialId(enum.IntEnum):
    """Materials of the phantom; the ground-truth label of each is in LABEL_OF_MATERIAL."""

    VACUUM = 0
    SOFT_TISSUE = 1
    MARROW = 2
    BONE = 3
    PORE_FLUID = 4
    BLOOD = 5


class Label(enum.IntEnum):
    """Ground-truth label codes (DESIGN.md)."""

    BACKGROUND = 0
    SOFT_TISSUE = 1
    BONE = 2
    LCN_PORE = 3
    VESSEL = 4


LABEL_OF_MATERIAL = np.array(
    [Label.BACKGROUND, Label.SOFT_TISSUE, Label.SOFT_TISSUE, Label.BONE, Label.LCN_PORE, Label.VESSEL],
    dtype=np.uint8,
)
"""Label of each MaterialId (marrow is soft tissue; pore fluid is LCN; blood is vessel)."""


@dataclass(frozen=True)
class Material:
    """A tissue: elemental mass fractions and density (g/cm^3)."""

    name: str
    mass_fractions: tuple[tuple[str, float], ...]
    density_g_cm3: float

    @property
    def formula(self) -> str:
        """Molar formula xraydb parses, e.g. 'H10.1C1.19...' (moles per 100 g)."""
        if not self.mass_fractions:
            return ""
        total = sum(w for _, w in self.mass_fractions)
        return "".join(f"{el}{100.0 * w / total / xraydb.atomic_mass(el):.6g}" for el, w in self.mass_fractions)


MATERIALS: dict[MaterialId, Material] = {
    MaterialId.VACUUM: Material("vacuum", (), 0.0),
    MaterialId.SOFT_TISSUE: Material(
        "skeletal muscle (ICRU-44)",
        (("H", 10.2), ("C", 14.3), ("N", 3.4), ("O", 71.0), ("Na", 0.1), ("P", 0.2), ("S", 0.3), ("Cl", 0.1),
         ("K", 0.4)),
        1.05,
    ),
    MaterialId.MARROW: Material(
        "red marrow (ICRU-44)",
        (("H", 10.5), ("C", 41.4), ("N", 3.4), ("O", 43.9), ("P", 0.1), ("S", 0.2), ("Cl", 0.2), ("K", 0.2),
         ("Fe", 0.1)),
        1.03,
    ),
    MaterialId.BONE: Material(
        "cortical bone (ICRU-44)",
        (("H", 3.4), ("C", 15.5), ("N", 4.2), ("O", 43.5), ("Na", 0.1), ("Mg", 0.2), ("P", 10.3), ("S", 0.3),
         ("Ca", 22.5)),
        1.92,
    ),
    MaterialId.PORE_FLUID: Material("pore fluid (water)", (("H", 11.19), ("O", 88.81)), 1.00),
    MaterialId.BLOOD: Material(
        "whole blood (ICRU-44)",
        (("H", 10.2), ("C", 11.0), ("N", 3.3), ("O", 74.5), ("Na", 0.1), ("P", 0.1), ("S", 0.2), ("Cl", 0.3),
         ("K", 0.2), ("Fe", 0.1)),
        1.06,
    ),
}

HC_KEV_MM = 1.239841984e-6
"""h*c in keV*mm: wavelength (mm) = HC_KEV_MM / energy (keV)."""


def wavenumber_per_mm(energy_kev: float) -> float:
    """k = 2 pi / lambda (1/mm)."""
    return 2.0 * np.pi * energy_kev / HC_KEV_MM


@lru_cache(maxsize=4096)
def _mu_per_mm(formula: str, density: float, energy_kev: float) -> float:
    return float(xraydb.material_mu(formula, energy_kev * 1000.0, density=density)) / 10.0


@lru_cache(maxsize=4096)
def _delta(formula: str, density: float, energy_kev: float) -> float:
    return float(xraydb.xray_delta_beta(formula, density, energy_kev * 1000.0)[0])


def mu_per_mm(formula: str, density_g_cm3: float, energy_kev: float) -> float:
    """Linear attenuation coefficient (1/mm) of a formula at one energy (keV)."""
    if density_g_cm3 == 0 or not formula:
        return 0.0
    return _mu_per_mm(formula, float(density_g_cm3), round(float(energy_kev), 6))


def mu_spectrum_per_mm(formula: str, density_g_cm3: float, energies_kev: np.ndarray) -> np.ndarray:
    """mu (1/mm) of a formula at many energies (keV) at once."""
    energies = np.asarray(energies_kev, dtype=float)
    if density_g_cm3 == 0 or not formula or energies.size == 0:
        return np.zeros_like(energies)
    return np.asarray(xraydb.material_mu(formula, energies * 1000.0, density=density_g_cm3), dtype=float) / 10.0


def delta(formula: str, density_g_cm3: float, energy_kev: float) -> float:
    """Refractive index decrement delta (n = 1 - delta + i beta) at one energy (keV)."""
    if density_g_cm3 == 0 or not formula:
        return 0.0
    return _delta(formula, float(density_g_cm3), round(float(energy_kev), 6))


def delta_beta(formula: str, density_g_cm3: float, energy_kev: float) -> tuple[float, float]:
    """(delta, beta) of a formula at one energy (keV)."""
    d, b, _ = xraydb.xray_delta_beta(formula, density_g_cm3, energy_kev * 1000.0)
    return float(d), float(b)


def material_mu(material: MaterialId, energy_kev: float) -> float:
    """mu (1/mm) of a phantom material."""
    m = MATERIALS[material]
    return mu_per_mm(m.formula, m.density_g_cm3, energy_kev)


def material_delta(material: MaterialId, energy_kev: float) -> float:
    """delta of a phantom material."""
    m = MATERIALS[material]
    return delta(m.formula, m.density_g_cm3, energy_kev)


def property_table(energy_kev: float, with_phase: bool) -> np.ndarray:
    """Per-material line-integral channels: column 0 mu (1/mm); column 1 k*delta (rad/mm) if with_phase."""
    k = wavenumber_per_mm(energy_kev)
    rows = []
    for material in MaterialId:
        row = [material_mu(material, energy_kev)]
        if with_phase:
            row.append(k * material_delta(material, energy_kev))
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)
