"""What reaches the detector: the anode's spectrum, the beam path, the scintillator.

Source (liquid-metal jet, anode ``source.anode``, Ga by default):

* characteristic K lines (energies and relative intensities from xraydb), with the
  K-alpha yield ``sim.source.kalpha_photons_per_s_sr_w`` at ``sim.source.kalpha_reference_kv``
  scaled with the electron current (P / U) and the overvoltage as (U/E_K - 1)^1.63
  (Green & Cosslett, J. Phys. D 1, 425 (1968)); no lines below the K edge;
* bremsstrahlung after Kramers: total efficiency 1.1e-9 * Z * U[V], spread in energy as
  (E0 - E), emitted isotropically;

filtered by the beryllium exit window, an optional aluminium filter and the air between
source and detector. The
detector absorbs a fraction 1 - exp(-mu t) in its scintillator and each absorbed photon
of energy E gives on average g(E) = E * yield * collection * QE electrons (Poisson).

The cone beam uses the whole spectrum; the TXM (parallel beam) only the K-alpha lines,
because its zone-plate objective focuses a single energy. Beam hardening is not
simulated: the specimen attenuates at the *effective energy*, the energy at which a
water layer as thick as the specimen's mean chord (pi * area / perimeter of the soft
tissue's cross-section) transmits the same fraction of the detector signal as it does
for the whole detected spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xraydb

from ..config import Config
from .materials import mu_spectrum_per_mm

KEV_TO_J = 1.602176634e-16
KRAMERS_EFFICIENCY_PER_V = 1.1e-9
"""Bremsstrahlung efficiency per volt per unit Z (total emitted power / beam power)."""
OVERVOLTAGE_EXPONENT = 1.63
SPECTRUM_BIN_KEV = 0.25
BERYLLIUM_DENSITY = 1.848
ALUMINIUM_DENSITY = 2.699


@dataclass(frozen=True)
class Beam:
    """Photons per second per steradian at each energy, as emitted towards the sample."""

    energies_kev: np.ndarray
    photons_per_s_sr: np.ndarray

    def filtered(self, formula: str, density_g_cm3: float, thickness_mm: float) -> Beam:
        """This beam after passing ``thickness_mm`` of a material."""
        if thickness_mm <= 0:
            return self
        mu = mu_spectrum_per_mm(formula, density_g_cm3, self.energies_kev)
        return Beam(self.energies_kev, self.photons_per_s_sr * np.exp(-mu * thickness_mm))


@dataclass(frozen=True)
class DetectedBeam:
    """Per steradian (or per pixel once scaled): absorbed quanta, their gain and the effective energy."""

    quanta_per_s: float
    """X-ray photons absorbed in the scintillator per second (per sr, or per pixel after ``scaled``)."""
    electrons_per_quantum: float
    """Mean signal electrons per absorbed photon over the detected spectrum."""
    electron_second_moment: float
    """E[g + g^2] over the detected spectrum: variance of the electrons per photon is N * this."""
    effective_energy_kev: float

    def scaled(self, factor: float) -> DetectedBeam:
        return DetectedBeam(self.quanta_per_s * factor, self.electrons_per_quantum,
                            self.electron_second_moment, self.effective_energy_kev)


def _anode_z(anode: str) -> int:
    try:
        return xraydb.atomic_number(anode)
    except Exception as exc:  # xraydb raises plain errors for unknown symbols
        raise ValueError(f"source.anode = {anode!r} is not an element symbol xraydb knows (e.g. 'Ga')") from exc


def source_beam(config: Config, kv: float, power_w: float, lines_only: bool) -> Beam:
    """The anode's emission towards the sample, after the beryllium window."""
    if kv <= 0 or power_w < 0:
        raise ValueError(f"the source needs kv > 0 and power >= 0, got kv={kv}, power={power_w} W")
    emission = config.sim.source
    anode = config.source.anode
    edge_kev = xraydb.xray_edge(anode, "K").energy / 1000.0
    lines = xraydb.xray_lines(anode, "K")
    alpha = {k: v for k, v in lines.items() if k.startswith("Ka")}
    alpha_intensity = sum(v.intensity for v in alpha.values())
    energies: list[float] = []
    photons: list[float] = []
    if kv > edge_kev:
        def overvoltage_term(u_kv: float) -> float:
            return (u_kv / edge_kev - 1.0) ** OVERVOLTAGE_EXPONENT / u_kv

        kalpha = (emission.kalpha_photons_per_s_sr_w * power_w * overvoltage_term(kv)
                  / overvoltage_term(emission.kalpha_reference_kv))
        for line in (alpha if lines_only else lines).values():
            energies.append(line.energy / 1000.0)
            photons.append(kalpha * line.intensity / alpha_intensity)
    if not lines_only:
        z = _anode_z(anode)
        edges = np.arange(1.0, kv, SPECTRUM_BIN_KEV)
        centres = edges + SPECTRUM_BIN_KEV / 2
        centres = centres[centres < kv]
        brems_power = KRAMERS_EFFICIENCY_PER_V * z * kv * 1000.0 * power_w
        watts_per_kev_sr = brems_power * 2.0 * (kv - centres) / kv**2 / (4.0 * np.pi)
        energies.extend(centres.tolist())
        photons.extend((watts_per_kev_sr * SPECTRUM_BIN_KEV / (centres * KEV_TO_J)).tolist())
    beam = Beam(np.asarray(energies, dtype=float), np.asarray(photons, dtype=float))
    beam = beam.filtered("Be", BERYLLIUM_DENSITY, emission.source_window_be_um / 1000.0)
    return beam.filtered("Al", ALUMINIUM_DENSITY, emission.filter_al_um / 1000.0)


def detect(config: Config, beam: Beam, air_path_mm: float, specimen_chord_mm: float) -> DetectedBeam:
    """Absorbed quanta per steradian of ``beam`` after ``air_path_mm`` of air, and the detector's gain.

    ``specimen_chord_mm`` is the water-equivalent thickness the effective energy is matched at.
    """
    det = config.sim.detector
    air_formula, air_density = xraydb.get_material("air")
    beam = beam.filtered(air_formula, air_density, air_path_mm)
    e = beam.energies_kev
    if e.size == 0:
        return DetectedBeam(0.0, 0.0, 0.0, float("nan"))
    mu_scint = mu_spectrum_per_mm(det.scintillator_formula, det.scintillator_density_g_cm3, e)
    absorbed = beam.photons_per_s_sr * (1.0 - np.exp(-mu_scint * det.scintillator_um / 1000.0))
    gain = e * det.scintillator_photons_per_kev * det.optics_collection_efficiency * det.sensor_qe
    total = absorbed.sum()
    if total <= 0:
        return DetectedBeam(0.0, 0.0, 0.0, float("nan"))
    mean_gain = float((absorbed * gain).sum() / total)
    second = float((absorbed * (gain + gain**2)).sum() / total)
    energy = effective_energy(e, absorbed * gain, specimen_chord_mm)
    return DetectedBeam(float(total), mean_gain, second, energy)


def effective_energy(energies_kev: np.ndarray, signal_weights: np.ndarray, water_mm: float) -> float:
    """Energy (keV, to 0.1 eV) whose water transmission through ``water_mm`` matches the spectrum's."""
    formula, density = xraydb.get_material("water")
    lo, hi = float(energies_kev.min()), float(energies_kev.max())
    if hi - lo < 1e-9:
        return round(lo, 4)
    mu = mu_spectrum_per_mm(formula, density, energies_kev)
    # -log of the signal-weighted transmission: an attenuation per mm to match.
    target = -np.log((signal_weights * np.exp(-mu * water_mm)).sum() / signal_weights.sum()) / water_mm
    grid = np.linspace(lo, hi, 4096)
    mu_grid = mu_spectrum_per_mm(formula, density, grid)  # falls monotonically with energy here
    index = int(np.clip(np.searchsorted(-mu_grid, -target), 1, grid.size - 1))
    e0, e1, m0, m1 = grid[index - 1], grid[index], mu_grid[index - 1], mu_grid[index]
    return round(float(e0 + (e1 - e0) * (m0 - target) / (m0 - m1)), 4)
