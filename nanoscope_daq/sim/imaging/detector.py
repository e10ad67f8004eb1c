"""The sCMOS camera behind its scintillator: photons in, 16-bit counts out.

Per binned pixel (b x b physical pixels), for N absorbed X-ray photons expected:

* signal electrons: each absorbed photon gives Poisson(g) electrons, g = E * yield *
  collection * QE, so the electrons have mean N * g and variance N * E[g + g^2]
  (compound Poisson, spectrum-averaged: spectrum.DetectedBeam);
* dark current b^2 * D * t (Poisson), read noise sqrt(b^2) * sigma_r (Gaussian: binning
  sums b^2 read-outs), full well b^2 * full_well_e (electrons beyond it are lost);
* counts = offset map + electrons / (electrons per count), rounded and clipped to
  0 .. 2^bit_depth - 1; ``binning_mode = "average"`` divides by b^2 before rounding;
* a fixed gain map (smooth flat-field non-uniformity times per-pixel response
  non-uniformity) multiplies the photons, a fixed offset map (bias + its fixed
  pattern) adds to the counts; both are seeded and defined per physical pixel, so
  every binning sees the same detector.

Noise is drawn fast and honestly: where the shot noise is large (>= 100 photons) or
small beside the read noise, one Gaussian with the exact mean and variance (its normal
deviates come from a 65536-entry inverse-CDF table indexed by random bytes: exact
quantiles to 1/65536, tails cut at 4.3 sigma); elsewhere the photon count is drawn first
(Poisson below 10 photons, a skew-corrected normal from 10 to 100) and, given it, the
electrons, dark current and read noise as one Gaussian with the exact conditional
mean and variance.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
from scipy.special import ndtri

from ...config import DetectorConfig, DetectorModelConfig
from ...physics.spectrum import DetectedBeam

GAUSSIAN_MIN_PHOTONS = 100.0
"""Above this many photons per pixel the Gaussian approximation of the shot noise is used."""
POISSON_MAX_PHOTONS = 10.0
"""Below this many photons per pixel photon counts are drawn from the Poisson distribution itself."""
SHOT_READ_RATIO = 0.1
"""Below this ratio of shot to read variance the shot noise is folded into the Gaussian too."""
FLAT_FIELD_MODES = 5
"""Cosine/sine modes per axis of the smooth flat-field pattern."""


@lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    table = ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float64)
    return (table / table.std()).astype(np.float32)


def fast_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal deviates (float32) from random bytes and an inverse-CDF table."""
    count = int(np.prod(shape))
    index = np.frombuffer(rng.bytes(2 * count), dtype=np.uint16)
    return _normal_table()[index].reshape(shape)


class Detector:
    """Fixed-pattern maps and the read-out of one frame."""

    def __init__(self, frame: DetectorConfig, config: DetectorModelConfig, seed: int) -> None:
        self.frame = frame
        self.config = config
        self.seed = seed
        self.max_count = 2**config.bit_depth - 1
        self._maps: dict[tuple[str, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def frame_shape(self, binning: int) -> tuple[int, int]:
        check_binning(self.frame, binning)
        return self.frame.pixels_y // binning, self.frame.pixels_x // binning

    # -- fixed patterns -----------------------------------------------------------
    def gain_map(self, binning: int) -> np.ndarray:
        """Relative photon response per binned pixel (mean ~1)."""
        return self._map("gain", binning)

    def offset_map(self, binning: int) -> np.ndarray:
        """Bias counts per binned pixel, summed over the binned pixels."""
        return self._map("offset", binning)

    def _map(self, kind: str, binning: int) -> np.ndarray:
        key = (kind, binning)
        with self._lock:
            if key not in self._maps:
                self._maps[key] = self._make_gain(binning) if kind == "gain" else self._make_offset(binning)
            return self._maps[key]

    def _physical(self, salt: int, sigma: float) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 9001, salt])
        return rng.normal(0.0, sigma, (self.frame.pixels_y, self.frame.pixels_x)).astype(np.float32)

    def _binned_sum(self, physical: np.ndarray, binning: int) -> np.ndarray:
        rows, cols = self.frame_shape(binning)
        return physical[: rows * binning, : cols * binning].reshape(rows, binning, cols, binning).sum(axis=(1, 3))

    def _make_gain(self, binning: int) -> np.ndarray:
        c = self.config
        rows, cols = self.frame_shape(binning)
        rng = np.random.default_rng([self.seed, 9000])
        # Smooth pattern: random combination of low cosine/sine modes over the physical detector.
        v = ((np.arange(rows) + 0.5) * binning) / self.frame.pixels_y
        u = ((np.arange(cols) + 0.5) * binning) / self.frame.pixels_x
        k = np.arange(FLAT_FIELD_MODES)
        basis_v = np.concatenate([np.cos(np.pi * np.outer(v, k)), np.sin(np.pi * np.outer(v, k[1:]))], axis=1)
        basis_u = np.concatenate([np.cos(np.pi * np.outer(u, k)), np.sin(np.pi * np.outer(u, k[1:]))], axis=1)
        weights = rng.normal(size=(basis_v.shape[1], basis_u.shape[1])) / (1 + np.add.outer(
            np.r_[k, k[1:]], np.r_[k, k[1:]]))
        weights[0, 0] = 0.0
        smooth = basis_v @ weights @ basis_u.T
        smooth -= smooth.mean()
        if smooth.std() > 0:
            smooth *= c.flat_nonuniformity / smooth.std()
        prnu = self._binned_sum(self._physical(1, c.pixel_response_nonuniformity), binning) / binning**2
        return ((1.0 + smooth) * (1.0 + prnu)).astype(np.float32)

    def _make_offset(self, binning: int) -> np.ndarray:
        c = self.config
        pattern = self._binned_sum(self._physical(2, c.offset_fixed_pattern_counts), binning)
        return (binning**2 * c.offset_counts + pattern).astype(np.float32)

    # -- read-out -----------------------------------------------------------------
    def read(self, photons: np.ndarray | None, beam: DetectedBeam | None, exposure_s: float, binning: int,
             rng: np.random.Generator) -> np.ndarray:
        """Counts (uint16) of a frame whose pixels absorbed ``photons`` on average (None: dark)."""
        c = self.config
        shape = self.frame_shape(binning)
        b2 = binning**2
        dark_e = b2 * c.dark_current_e_per_s * exposure_s
        read_var = b2 * c.read_noise_e**2
        if photons is None or beam is None:
            photons = np.zeros(shape, np.float32)
            gain, second = 0.0, 0.0
        else:
            photons = np.broadcast_to(np.asarray(photons, np.float32), shape)
            gain, second = beam.electrons_per_quantum, beam.electron_second_moment
        scratch = np.multiply(photons, np.float32(second), dtype=np.float32)
        scratch += np.float32(dark_e + read_var)
        electrons = fast_normal(rng, shape)
        electrons *= np.sqrt(scratch, out=scratch)
        electrons += np.multiply(photons, np.float32(gain), out=scratch)
        electrons += np.float32(dark_e)
        # Where the shot noise is neither large nor negligible beside the read noise, draw the photon
        # count itself, then the electrons given it.
        shot_matters = (SHOT_READ_RATIO * read_var - dark_e) / second if second > 0 else np.inf
        if shot_matters < GAUSSIAN_MIN_PHOTONS:
            low = np.flatnonzero((photons < GAUSSIAN_MIN_PHOTONS) & (photons >= shot_matters))
            if low.size:
                electrons.ravel()[low] = self._few_photons(photons.ravel()[low], gain, second, dark_e, read_var, rng)
        np.minimum(electrons, np.float32(b2 * c.full_well_e), out=electrons)
        counts = electrons
        counts *= np.float32(1.0 / c.electrons_per_count)
        counts += self.offset_map(binning)
        if c.binning_mode == "average":
            counts *= np.float32(1.0 / b2)
        counts += np.float32(0.5)  # round half up once clipped to >= 0 and truncated
        np.clip(counts, 0, self.max_count, out=counts)
        return counts.astype(np.uint16)

    @staticmethod
    def _few_photons(expected: np.ndarray, gain: float, second: float, dark_e: float, read_var: float,
                     rng: np.random.Generator) -> np.ndarray:
        """Electrons of pixels expecting fewer than GAUSSIAN_MIN_PHOTONS photons.

        Photon counts: Poisson below POISSON_MAX_PHOTONS; above, the Cornish-Fisher
        expansion of the Poisson quantile, lambda + sqrt(lambda) z + (z^2 - 1) / 6 (exact
        mean, variance + 1/18, Poisson's skewness), at a tenth of the cost. Given the count
        N, the electrons (a sum of N Poisson(g)), dark current and read noise are one
        Gaussian of mean N g + dark and variance N (E[g + g^2] - g^2) + dark + read^2.
        """
        expected = expected.astype(np.float32)
        z = fast_normal(rng, expected.shape)
        quanta = expected + np.sqrt(expected) * z + (z * z - 1) / 6
        few = expected < POISSON_MAX_PHOTONS
        if few.any():
            quanta[few] = rng.poisson(expected[few])
        np.maximum(quanta, 0.0, out=quanta)
        spread = np.sqrt(quanta * np.float32(second - gain * gain) + np.float32(dark_e + read_var))
        return quanta * np.float32(gain) + np.float32(dark_e) + spread * fast_normal(rng, expected.shape)

    def noise_variance_counts(self, photons: np.ndarray, beam: DetectedBeam, exposure_s: float,
                              binning: int) -> np.ndarray:
        """The model's variance of the counts (before rounding and clipping) for ``photons`` per pixel."""
        c = self.config
        b2 = binning**2
        electrons_var = (np.asarray(photons) * beam.electron_second_moment + b2 * c.dark_current_e_per_s * exposure_s
                         + b2 * c.read_noise_e**2)
        scale = 1.0 / c.electrons_per_count / (b2 if c.binning_mode == "average" else 1)
        return electrons_var * scale**2


def check_binning(config: DetectorConfig, binning: int) -> None:
    """A clear error for a binning the detector cannot do."""
    if isinstance(binning, bool) or not isinstance(binning, (int, np.integer)) or binning < 1:
        raise ValueError(f"binning must be a positive integer, got {binning!r}")
    if binning > min(config.pixels_x, config.pixels_y) // 4:
        raise ValueError(
            f"binning {binning} leaves fewer than 4 pixels of the {config.pixels_x}x{config.pixels_y} detector; "
            "use a smaller binning"
        )
