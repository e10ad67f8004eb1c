"""Single-distance phase retrieval (Paganin et al., J. Microsc. 206, 33 (2002)).

For a homogeneous object (delta / beta constant) imaged at an effective propagation
distance z (cone beam: z = (SDD - SOD) SOD / SDD; pixels at the sample), the
transmission I / I0 is low-passed by 1 / (1 + pi lambda z (delta / beta) |f|^2), f in
cycles per mm, and -log of the result is the line integral of mu: the edge-enhancement
fringes are turned into contrast, noise is suppressed, and the slice stays in 1/mm.
"""

from __future__ import annotations

import math

import scipy.fft
import torch
import torch.nn.functional as F

from .errors import ReconInputError

HC_KEV_MM = 12.398419843320026e-7
"""h c in keV mm: wavelength (mm) = HC_KEV_MM / energy (keV)."""


def paganin_filter(transmission: torch.Tensor, pixel_mm: float, distance_mm: float, energy_kev: float,
                   delta_beta: float) -> torch.Tensor:
    """Transmission images (n, rows, cols) low-passed by Paganin's filter (same shape; edges padded)."""
    if not (pixel_mm > 0 and distance_mm > 0 and energy_kev > 0 and delta_beta > 0):
        raise ReconInputError(
            f"Paganin phase retrieval needs pixel ({pixel_mm} mm), propagation distance ({distance_mm} mm), energy "
            f"({energy_kev} keV) and delta/beta ({delta_beta}) all > 0; give them (--paganin, --energy-kev, "
            "--distance-mm)"
        )
    n, rows, cols = transmission.shape
    pad_r, pad_c = scipy.fft.next_fast_len(2 * rows), scipy.fft.next_fast_len(2 * cols)
    top, left = (pad_r - rows) // 2, (pad_c - cols) // 2
    padded = F.pad(transmission[:, None], (left, pad_c - cols - left, top, pad_r - rows - top), mode="replicate")[:, 0]
    fy = torch.fft.fftfreq(pad_r, d=pixel_mm, device=transmission.device)[:, None]
    fx = torch.fft.rfftfreq(pad_c, d=pixel_mm, device=transmission.device)[None, :]
    wavelength = HC_KEV_MM / energy_kev
    kernel = 1.0 / (1.0 + math.pi * wavelength * distance_mm * delta_beta * (fx**2 + fy**2))
    filtered = torch.fft.irfft2(torch.fft.rfft2(padded) * kernel, s=(pad_r, pad_c))
    return filtered[:, top:top + rows, left:left + cols]
