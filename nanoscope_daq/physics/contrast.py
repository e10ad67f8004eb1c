"""From line integrals to the ideal image intensity (relative to the open beam).

Absorption (either geometry): Beer-Lambert, I = exp(-integral of mu).

TXM (parallel geometry): the zone-plate objective images the exit wave
psi = exp(-integral mu / 2 - i * integral k delta) (thin specimen, in focus). The
condenser's annular illumination is a ring of incoherent plane waves; for each of its
``condenser_illumination_points`` directions s the undiffracted light lands in the back
focal plane at s and the object's spatial frequency f at s + f, where the pupil
(|s + f| <= 1 / (2 dr)) passes it and, with Zernike contrast, the phase ring (the
annulus of ``phase_ring_radius_fraction`` +- ``phase_ring_width_fraction`` / 2 of the pupil
radius, matched to the condenser's image) multiplies it by tau * exp(-i phi): the ring's
amplitude transmission and phase delay, both from xraydb for a ring of
``phase_ring_material`` thick enough to delay by ``phase_ring_shift_deg``. The image is the
mean over illumination points of |IFFT(FFT(psi) * H_s)|^2 (Abbe). Because every low
spatial frequency of the object also falls in the ring, large uniform features fade
towards the background (shade-off) and edges gain bright/dark fringes (halo): the
artifacts that defeat global thresholds in Zernike nano-CT. An open beam images to tau^2.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy.ndimage import gaussian_filter

from ..config import OpticsConfig
from .materials import delta_beta, wavenumber_per_mm

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def absorption(line_mu: np.ndarray) -> np.ndarray:
    """Beer-Lambert transmission."""
    return np.exp(-line_mu)


class TxmOptics:
    """Zone-plate imaging with optional Zernike phase ring, on a grid of ``pitch_mm`` at the sample."""

    def __init__(self, optics: OpticsConfig, energy_kev: float, zernike: bool) -> None:
        self.zernike = zernike
        self.cutoff = 1.0 / (2.0 * optics.zone_plate_outermost_zone_nm * 1e-6)  # 1/mm
        self.ring_radius = optics.phase_ring_radius_fraction * self.cutoff
        self.ring_half_width = optics.phase_ring_width_fraction * self.cutoff / 2
        k = wavenumber_per_mm(energy_kev)
        delta, beta = delta_beta(optics.phase_ring_material, optics.phase_ring_density_g_cm3, energy_kev)
        shift = np.radians(optics.phase_ring_shift_deg)
        self.ring_thickness_mm = shift / (k * delta)
        self.ring_amplitude = float(np.exp(-k * beta * self.ring_thickness_mm))
        self.ring_factor = self.ring_amplitude * np.exp(-1j * shift) if zernike else 1.0
        n = optics.condenser_illumination_points
        angles = 2 * np.pi * (np.arange(n) + 0.5) / n
        self.illumination = self.ring_radius * np.column_stack([np.cos(angles), np.sin(angles)])

    @property
    def open_beam(self) -> float:
        """Intensity of the open beam (no specimen): tau^2 with the ring, 1 without."""
        return float(abs(self.ring_factor) ** 2)

    def image(self, line_mu: np.ndarray, line_phase: np.ndarray, pitch_mm: float) -> np.ndarray:
        """Image intensity for line integrals of mu and k*delta sampled at ``pitch_mm`` (sample plane)."""
        rows, cols = line_mu.shape
        nyquist_corner = np.hypot(0.5, 0.5) / pitch_mm
        if not self.zernike and self.ring_radius + nyquist_corner <= self.cutoff:
            return np.exp(-line_mu)  # every frequency on the grid passes the pupil unchanged
        psi = np.exp(-0.5 * line_mu - 1j * line_phase).astype(np.complex64)
        pad_r, pad_c = scipy.fft.next_fast_len(rows + 16), scipy.fft.next_fast_len(cols + 16)
        psi = np.pad(psi, ((0, pad_r - rows), (0, pad_c - cols)), mode="reflect")
        spectrum = scipy.fft.fft2(psi)
        fy = scipy.fft.fftfreq(pad_r, d=pitch_mm)[:, None]
        fx = scipy.fft.fftfreq(pad_c, d=pitch_mm)[None, :]
        intensity = np.zeros((rows, cols), dtype=np.float64)
        for sx, sy in self.illumination:
            radius = np.sqrt((fx + sx) ** 2 + (fy + sy) ** 2)
            transfer = (radius <= self.cutoff).astype(np.complex64)
            if self.zernike:
                in_ring = np.abs(radius - self.ring_radius) <= self.ring_half_width
                transfer[in_ring] *= self.ring_factor
            field = scipy.fft.ifft2(spectrum * transfer)[:rows, :cols]
            intensity += field.real**2 + field.imag**2
        return (intensity / len(self.illumination)).astype(np.float32)


def bin_samples(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks (a detector pixel integrates over its area)."""
    if factor == 1:
        return image
    rows, cols = image.shape[0] // factor, image.shape[1] // factor
    return image[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def blur(image: np.ndarray, fwhm_px: float) -> np.ndarray:
    """Gaussian blur of the given FWHM in pixels (focal spot, scintillator and optics)."""
    if fwhm_px <= 0.05:
        return image
    return gaussian_filter(image, sigma=fwhm_px / FWHM_PER_SIGMA, mode="nearest")
