"""Per-pixel loops of the frame read-out, compiled with numba: one pass over the frame each.

numpy spends a full pass over the frame on every operation of the detector model (photons,
mean, variance, square root, deviate, full well, offset, rounding, clipping, conversion):
ten and more passes of 16 MB at 2048^2. Here each pixel is finished in registers, so a
frame costs one read of its inputs and one write of its counts. The functions release the
GIL (``nogil``), so render threads run them in parallel, and are cached on disk after the
first compilation.

The statistics are the detector model's (detector.py documents it); the loops only fuse it.
"""

from __future__ import annotations

import numba
import numpy as np

GAUSSIAN_MIN_PHOTONS = 100.0
"""Above this many photons per pixel the Gaussian approximation of the shot noise is used."""
POISSON_MAX_PHOTONS = 10.0
"""Below this many photons per pixel photon counts are drawn from the Poisson distribution itself."""
FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
"""Floating-point liberties the compiler may take to vectorise: not 'nnan' or 'ninf' (both occur legitimately)."""
ZERO = np.float32(0.0)
ONE = np.float32(1.0)


@numba.njit(nogil=True, cache=True, fastmath=FAST)
def read_out(photons_open: np.ndarray, transmission: np.ndarray, uniform_transmission: float,
             deviates: np.ndarray, table: np.ndarray, electrons_per_photon: float, second_moment: float,
             dark_e: float, read_var: float, full_well_e: float, counts_per_electron: float,
             offset_counts: np.ndarray, max_count: float, few_photons_from: float,
             rng: np.random.Generator, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Counts of ONE frame into ``out`` (uint16), ONE pass.

    Parameters
    ----------
    photons_open : (rows, cols) float32
        Photons each pixel absorbs without the specimen in the beam.
    transmission : (rows, cols) float32, or shape (0, 0)
        Ideal intensity relative to the open beam; an empty array means ``uniform_transmission`` everywhere.
    uniform_transmission : float
        The transmission of every pixel when ``transmission`` is empty (a flat: 1 or the phase ring's tau^2).
    deviates : (rows, cols) uint16
        Random indices into ``table``: ONE standard normal deviate per pixel.
    table : (65536,) float32
        Standard normal quantiles (detector.normal_table).
    electrons_per_photon, second_moment : float
        Mean electrons per absorbed photon and E[g + g^2] (spectrum.DetectedBeam).
    dark_e, read_var : float
        Dark electrons and read-noise variance (electrons^2) of a binned pixel.
    full_well_e : float
        Electrons a binned pixel holds; more are lost.
    counts_per_electron : float
        Conversion gain (and 1 / binning^2 in average mode).
    offset_counts : (rows, cols) float32
        Bias counts per pixel, already in the output's scale, plus 0.5 (rounding by truncation).
    max_count : float
        Largest count the ADC gives (2^bit_depth - 1).
    few_photons_from : float
        Pixels expecting between this and GAUSSIAN_MIN_PHOTONS photons draw their photon count first.
    rng : numpy.random.Generator
        Draws the photon counts and conditional deviates of those few pixels.
    out : (rows, cols) uint16
        Receives the counts.
    """
    rows, cols = out.shape
    uniform = transmission.shape[0] == 0
    few = 0
    for r in range(rows):  # every pixel as ONE Gaussian: branch-free, so the compiler vectorises it
        for c in range(cols):
            photons = photons_open[r, c] * (uniform_transmission if uniform else transmission[r, c])
            electrons = (photons * electrons_per_photon + dark_e
                         + np.sqrt(photons * second_moment + dark_e + read_var) * table[deviates[r, c]])
            counts = min(electrons, full_well_e) * counts_per_electron + offset_counts[r, c]
            out[r, c] = np.uint16(min(max(counts, ZERO), max_count))
            few += (photons >= few_photons_from) & (photons < GAUSSIAN_MIN_PHOTONS)
    if few == 0:
        return
    spread_var = second_moment - electrons_per_photon * electrons_per_photon
    for r in range(rows):  # pixels whose photon count is drawn first, then the electrons given it
        for c in range(cols):
            photons = photons_open[r, c] * (uniform_transmission if uniform else transmission[r, c])
            if not few_photons_from <= photons < GAUSSIAN_MIN_PHOTONS:
                continue
            if photons < POISSON_MAX_PHOTONS:
                quanta = np.float32(rng.poisson(photons))
            else:  # Cornish-Fisher: exact mean, Poisson's skewness
                z = table[deviates[r, c]]
                quanta = max(photons + np.sqrt(photons) * z + (z * z - ONE) / np.float32(6.0), ZERO)
            electrons = (quanta * electrons_per_photon + dark_e
                         + np.sqrt(quanta * spread_var + dark_e + read_var) * np.float32(rng.standard_normal()))
            counts = min(electrons, full_well_e) * counts_per_electron + offset_counts[r, c]
            out[r, c] = np.uint16(min(max(counts, ZERO), max_count))


@numba.njit(nogil=True, cache=True)
def resample(image: np.ndarray, row0: np.ndarray, row_frac: np.ndarray, col0: np.ndarray, col_frac: np.ndarray,
             out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Bilinear samples ``out[i, j]`` of ``image`` at (row0[i] + row_frac[i], col0[j] + col_frac[j]).

    The caller keeps every row0 + 1 and col0 + 1 inside the image.
    """
    rows, cols = out.shape
    for i in range(rows):
        r, fr = row0[i], row_frac[i]
        for j in range(cols):
            c, fc = col0[j], col_frac[j]
            top = image[r, c] + fc * (image[r, c + 1] - image[r, c])
            bottom = image[r + 1, c] + fc * (image[r + 1, c + 1] - image[r + 1, c])
            out[i, j] = top + fr * (bottom - top)
