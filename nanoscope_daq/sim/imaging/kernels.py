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

# The detector model's scalars, in this order, in one float32 array (``model`` below).
GAIN, SECOND_MOMENT, DARK_E, READ_VAR, FULL_WELL_E, COUNTS_PER_ELECTRON, MAX_COUNT, FEW_PHOTONS_FROM = range(8)


@numba.njit(nogil=True, cache=True, fastmath=FAST, inline="always")
def _digitise(electrons, offset, model):  # pragma: no cover - compiled
    """Counts (uint16) of ``electrons``: full well, conversion gain, offset (+0.5: rounds), ADC range."""
    counts = min(electrons, model[FULL_WELL_E]) * model[COUNTS_PER_ELECTRON] + offset
    return np.uint16(min(max(counts, np.float32(0.0)), model[MAX_COUNT]))


@numba.njit(nogil=True, cache=True, inline="always")
def _poisson_by_inversion(mean, uniform):  # pragma: no cover - compiled
    """The Poisson(``mean``) count whose CDF first reaches ``uniform`` (exact; ~mean + 1 steps).

    For the small means it serves (< POISSON_MAX_PHOTONS) this is ~5x faster than a numba
    ``Generator.poisson`` call, whose per-call set-up dominates at ~130 ns.
    """
    count = 0
    term = np.exp(-np.float64(mean))
    total = term
    while uniform > total and count < 1000:
        count += 1
        term *= mean / count
        total += term
    return count


@numba.njit(nogil=True, cache=True, fastmath=FAST)
def read_out(photons_open: np.ndarray, transmission: np.ndarray, uniform_transmission: np.float32,
             deviates: np.ndarray, table: np.ndarray, model: np.ndarray, offset_counts: np.ndarray,
             out: np.ndarray) -> int:  # pragma: no cover - compiled
    """Counts of a frame into ``out`` (uint16), every pixel as one Gaussian, in one pass.

    Parameters
    ----------
    photons_open : (rows, cols) float32
        Photons each pixel absorbs without the specimen in the beam.
    transmission : (rows, cols) float32, or shape (0, 0)
        Ideal intensity relative to the open beam; empty: ``uniform_transmission`` everywhere.
    uniform_transmission : float32
        The transmission of every pixel when ``transmission`` is empty (a flat: 1 or the phase ring's tau^2).
    deviates : (rows, cols) uint16
        Random indices into ``table``: one standard normal deviate per pixel.
    table : (65536,) float32
        Standard normal quantiles (detector.normal_table).
    model : (8,) float32
        Electrons per photon, E[g + g^2], dark electrons, read variance (electrons^2), full well,
        counts per electron, largest count, and the photons from which a pixel's photon count is
        drawn first (indices GAIN .. FEW_PHOTONS_FROM).
    offset_counts : (rows, cols) float32
        Bias counts per pixel in the output's scale, plus 0.5 (rounding by truncation).
    out : (rows, cols) uint16
        Receives the counts.

    Returns
    -------
    int
        Pixels expecting between FEW_PHOTONS_FROM and GAUSSIAN_MIN_PHOTONS photons: ``redraw_few_photons`` redoes them.
    """
    rows, cols = out.shape
    uniform = transmission.shape[0] == 0
    gain, second, dark = model[GAIN], model[SECOND_MOMENT], model[DARK_E]
    floor, few_from = dark + model[READ_VAR], model[FEW_PHOTONS_FROM]
    few = 0
    for r in range(rows):  # branch-free, so the compiler vectorises it
        for c in range(cols):
            photons = photons_open[r, c] * (uniform_transmission if uniform else transmission[r, c])
            electrons = photons * gain + dark + np.sqrt(photons * second + floor) * table[deviates[r, c]]
            out[r, c] = _digitise(electrons, offset_counts[r, c], model)
            few += (photons >= few_from) & (photons < GAUSSIAN_MIN_PHOTONS)
    return few


@numba.njit(nogil=True, cache=True, fastmath=FAST)
def redraw_few_photons(photons_open: np.ndarray, transmission: np.ndarray, uniform_transmission: np.float32,
                       deviates: np.ndarray, more_deviates: np.ndarray, table: np.ndarray, model: np.ndarray,
                       offset_counts: np.ndarray, rng: np.random.Generator,
                       out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Counts of the pixels ``read_out`` left to it: photon count first, then the electrons given it.

    Photon counts: from POISSON_MAX_PHOTONS up, the Cornish-Fisher expansion of the Poisson
    quantile, lambda + sqrt(lambda) z + (z^2 - 1) / 6 (exact mean, variance + 1/18, Poisson's
    skewness) with the pixel's deviate z, in a branch-free pass the compiler vectorises; below,
    Poisson itself (by inversion of one uniform from ``rng``), in a second pass over those
    pixels. Given the count N, the electrons (a sum of N Poisson(g)), dark current and read
    noise are one Gaussian of mean N g + dark and variance N (E[g + g^2] - g^2) + dark + read^2,
    drawn with ``more_deviates``.
    Other arguments as ``read_out``.
    """
    rows, cols = out.shape
    uniform = transmission.shape[0] == 0
    gain, dark, few_from = model[GAIN], model[DARK_E], model[FEW_PHOTONS_FROM]
    spread, floor = model[SECOND_MOMENT] - gain * gain, dark + model[READ_VAR]
    sixth, one, zero = np.float32(1.0 / 6.0), np.float32(1.0), np.float32(0.0)
    poisson = 0
    for r in range(rows):
        for c in range(cols):
            photons = photons_open[r, c] * (uniform_transmission if uniform else transmission[r, c])
            z = table[deviates[r, c]]
            quanta = max(photons + np.sqrt(photons) * z + (z * z - one) * sixth, zero)
            electrons = quanta * gain + dark + np.sqrt(quanta * spread + floor) * table[more_deviates[r, c]]
            skewed = (photons >= few_from) & (photons < GAUSSIAN_MIN_PHOTONS)
            out[r, c] = _digitise(electrons, offset_counts[r, c], model) if skewed else out[r, c]
            poisson += (photons >= few_from) & (photons < POISSON_MAX_PHOTONS)
    if poisson == 0:
        return
    for r in range(rows):
        for c in range(cols):
            photons = photons_open[r, c] * (uniform_transmission if uniform else transmission[r, c])
            if few_from <= photons < POISSON_MAX_PHOTONS:
                quanta = np.float32(_poisson_by_inversion(photons, rng.random()))
                electrons = quanta * gain + dark + np.sqrt(quanta * spread + floor) * table[more_deviates[r, c]]
                out[r, c] = _digitise(electrons, offset_counts[r, c], model)


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
