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

Noise is drawn fast and honestly: where the shot noise is large (>= GAUSSIAN_MIN_PHOTONS = 100
photons) or small beside the read noise (shot variance below SHOT_READ_RATIO of it), one Gaussian
with the exact mean and variance; elsewhere the photon count is drawn first (Poisson below
POISSON_MAX_PHOTONS = 10, a skew-corrected normal from 10 to 100) and, given it, the electrons,
dark current and read noise as one Gaussian with the exact conditional mean and variance.

Why 100 photons: the Gaussian has the compound Poisson's mean and variance exactly; what it
lacks is the skewness, (g^3 + 3g^2 + g) / ((g + g^2)^1.5 sqrt(N)) ~ 1.07 / sqrt(N) for g ~ 20
electrons per photon, and the discreteness (gone: ~20 electrons per photon plus read noise).
At N = 100 that skewness is 0.1: the Gaussian's quantiles within 2 sigma move by less than
0.1 sigma / 6 * (z^2 - 1), under 0.06 of one standard deviation, and means, variances and
correlations -- all that flat-field correction, the tests and a reconstruction use -- are
exact. Below 100 the skewed draw keeps the third moment too.

The normal deviates come from a 65536-entry inverse-CDF table indexed by uniform 16-bit
integers (exact quantiles to 1/65536, tails cut at 4.3 sigma): 4 ms of random integers per
2048^2 frame where numpy's float32 ziggurat takes 15-40 ms. The whole read-out then runs as one
compiled pass per frame (kernels.py) instead of a dozen numpy passes.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
from scipy.special import ndtri

from ...config import DetectorConfig, DetectorModelConfig
from ...physics.spectrum import DetectedBeam
from .kernels import read_out, redraw_few_photons

SHOT_READ_RATIO = 0.1
"""Below this ratio of shot to read variance the shot noise is folded into the Gaussian too."""
FLAT_FIELD_MODES = 5
"""Cosine/sine modes per axis of the smooth flat-field pattern."""


@lru_cache(maxsize=1)
def normal_table() -> np.ndarray:
    """The 65536 standard normal quantiles (float32) that ``normal_deviates`` index, rescaled to unit variance."""
    table = ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float64)
    return (table / table.std()).astype(np.float32)


def normal_deviates(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform uint16 indices into ``normal_table``: one standard normal deviate each."""
    return rng.integers(0, 65536, size=shape, dtype=np.uint16)


class Detector:
    """Fixed-pattern maps and the read-out of one frame."""

    def __init__(self, frame: DetectorConfig, config: DetectorModelConfig, seed: int) -> None:
        self.frame = frame
        self.config = config
        self.seed = seed
        self.max_count = 2**config.bit_depth - 1
        self._maps: dict[tuple[str, int], np.ndarray] = {}
        self._lock = threading.RLock()  # a map may be made from another

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
                make = {"gain": self._make_gain, "offset": self._make_offset, "readout_offset": self._readout_offset}
                self._maps[key] = make[kind](binning)
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

    def _readout_offset(self, binning: int) -> np.ndarray:
        """The offset map in output counts (averaged in average mode) plus 0.5: truncation then rounds."""
        offset = self.offset_map(binning).copy()
        if self.config.binning_mode == "average":
            offset /= np.float32(binning**2)
        return offset + np.float32(0.5)

    # -- read-out -----------------------------------------------------------------
    def read(self, photons_open: np.ndarray | None, beam: DetectedBeam | None, exposure_s: float, binning: int,
             rng: np.random.Generator, transmission: np.ndarray | float = 1.0) -> np.ndarray:
        """Counts (uint16) of a frame whose pixels absorb ``photons_open * transmission`` photons on average.

        Parameters
        ----------
        photons_open : ndarray or None
            Photons each binned pixel absorbs in the open beam (gain map included); None: a dark frame.
        beam : DetectedBeam or None
            The detected spectrum (electrons per photon and their second moment); None for a dark.
        exposure_s : float
            Exposure time (dark current).
        binning : int
            Binning of the frame.
        rng : numpy.random.Generator
            Draws every deviate of the frame; the frame is fully determined by it and the inputs.
        transmission : ndarray or float
            Ideal intensity relative to the open beam, per pixel or uniform.
        """
        c = self.config
        shape = self.frame_shape(binning)
        b2 = binning**2
        dark_e = b2 * c.dark_current_e_per_s * exposure_s
        read_var = b2 * c.read_noise_e**2
        if photons_open is None or beam is None:
            photons_open, transmission = self.offset_map(binning), 0.0  # no photons; any map of the shape
            gain, second = 0.0, 0.0
        else:
            gain, second = beam.electrons_per_quantum, beam.electron_second_moment
        per_pixel = np.empty((0, 0), np.float32)
        if np.ndim(transmission):
            per_pixel = np.ascontiguousarray(transmission, np.float32)
            if per_pixel.shape != shape:
                raise ValueError(f"transmission of shape {per_pixel.shape} for a frame of {shape}")
        # Where the shot noise is neither large nor negligible beside the read noise, the photon
        # count is drawn first, then the electrons given it.
        few_photons_from = (SHOT_READ_RATIO * read_var - dark_e) / second if second > 0 else np.inf
        model = np.array([gain, second, dark_e, read_var, b2 * c.full_well_e, self._counts_per_electron(binning),
                          self.max_count, few_photons_from], np.float32)
        photons_open = np.ascontiguousarray(photons_open, np.float32)
        uniform = np.float32(transmission if not per_pixel.size else 0.0)
        deviates, table, offset = normal_deviates(rng, shape), normal_table(), self._map("readout_offset", binning)
        out = np.empty(shape, np.uint16)
        if read_out(photons_open, per_pixel, uniform, deviates, table, model, offset, out):
            redraw_few_photons(photons_open, per_pixel, uniform, deviates, normal_deviates(rng, shape), table, model,
                               offset, rng, out)
        return out

    def _counts_per_electron(self, binning: int) -> float:
        scale = 1.0 / self.config.electrons_per_count
        return scale / binning**2 if self.config.binning_mode == "average" else scale

    def noise_variance_counts(self, photons: np.ndarray, beam: DetectedBeam, exposure_s: float,
                              binning: int) -> np.ndarray:
        """The model's variance of the counts (before rounding and clipping) for ``photons`` per pixel."""
        c = self.config
        b2 = binning**2
        electrons_var = (np.asarray(photons) * beam.electron_second_moment + b2 * c.dark_current_e_per_s * exposure_s
                         + b2 * c.read_noise_e**2)
        return electrons_var * self._counts_per_electron(binning) ** 2


def check_binning(config: DetectorConfig, binning: int) -> None:
    """A clear error for a binning the detector cannot do."""
    if isinstance(binning, bool) or not isinstance(binning, (int, np.integer)) or binning < 1:
        raise ValueError(f"binning must be a positive integer, got {binning!r}")
    if binning > min(config.pixels_x, config.pixels_y) // 4:
        raise ValueError(
            f"binning {binning} leaves fewer than 4 pixels of the {config.pixels_x}x{config.pixels_y} detector; "
            "use a smaller binning"
        )
