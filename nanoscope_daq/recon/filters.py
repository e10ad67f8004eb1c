"""Ramp filters for filtered back-projection and the Fourier method.

The ramp is the band-limited ramp sampled in space (Kak & Slaney, ch. 3, eq. 61):
h(0) = 1/4, h(n odd) = -1/(pi n)^2, h(n even) = 0, in pixel units, zero-padded to at
least twice the detector width and transformed. Unlike |k| sampled in frequency it
has the right mean (no DC offset in the reconstruction). The window multiplies it as
a function of x = frequency / Nyquist in [0, 1] (the definitions scikit-image uses):

* ``ram-lak``: 1;  ``shepp-logan``: sin(pi x / 2) / (pi x / 2);  ``cosine``: cos(pi x / 2);
* ``hamming``: 0.54 + 0.46 cos(pi x);  ``hann``: 0.5 + 0.5 cos(pi x).

``cutoff`` (fraction of Nyquist) stretches the window to end there and zeroes the ramp
above it (ASTRA's ``FilterD``).
"""

from __future__ import annotations

import math

import scipy.fft
import torch

from ..config import RECON_FILTERS
from .errors import ReconInputError

FILTERS = RECON_FILTERS


def padded_length(cols: int) -> int:
    """FFT length for filtering ``cols`` samples without circular wrap-around."""
    return scipy.fft.next_fast_len(2 * cols, real=True)


def check_filter(name: str) -> str:
    if name not in FILTERS:
        raise ReconInputError(f"unknown filter {name!r}; choose one of: {', '.join(FILTERS)}")
    return name


def _window(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "ram-lak":
        return torch.ones_like(x)
    if name == "shepp-logan":
        return torch.sinc(x / 2)  # torch.sinc(t) = sin(pi t) / (pi t)
    if name == "cosine":
        return torch.cos(math.pi * x / 2)
    if name == "hamming":
        return 0.54 + 0.46 * torch.cos(math.pi * x)
    return 0.5 + 0.5 * torch.cos(math.pi * x)


def ramp_response(length: int, name: str = "ram-lak", cutoff: float = 1.0,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Real frequency response (length // 2 + 1 values, rfft order) of the windowed ramp, per pixel^2 units."""
    check_filter(name)
    if not 0 < cutoff <= 1:
        raise ReconInputError(f"filter cutoff {cutoff} must be in (0, 1] (a fraction of the Nyquist frequency)")
    n = torch.arange(length, dtype=torch.float64, device=device)
    n = torch.minimum(n, length - n)  # circular distance
    h = torch.zeros(length, dtype=torch.float64, device=device)
    h[0] = 0.25
    odd = (n % 2) == 1
    h[odd] = -1.0 / (math.pi * n[odd]) ** 2
    response = torch.fft.rfft(h).real
    x = torch.arange(response.numel(), dtype=torch.float64, device=device) / (length / 2)
    window = torch.where(x <= cutoff, _window(name, x / cutoff), torch.zeros_like(x))
    return (response * window).to(torch.float32)


def linear_interpolation_power(frequency: torch.Tensor) -> torch.Tensor:
    """Noise power that linear interpolation passes at ``frequency`` (cycles per sample), position-averaged.

    A signal interpolated linearly at a random sub-sample position has, per frequency f of
    its samples, the mean power sum_m sinc^4(f + m) = (2 + cos 2 pi f) / 3 (aliases
    included): 1 at f = 0, 1/3 at the Nyquist frequency. This is the smoothing that a
    back-projector interpolating linearly along the detector applies to the noise of the
    filtered projections (measured in docs/recon.md, "Noise").
    """
    return (2 + torch.cos(2 * math.pi * frequency)) / 3


def filter_rows(projections: torch.Tensor, response: torch.Tensor, pad_mode: str = "edge") -> torch.Tensor:
    """Convolve every detector row (last axis) with the filter whose rfft is ``response``; same shape out.

    ``pad_mode`` "edge" repeats the edge pixels (fewer truncation artifacts when the
    specimen is wider than the field), "zero" pads with zeros.
    """
    cols = projections.shape[-1]
    length = 2 * (response.numel() - 1)
    if pad_mode == "edge":
        extra = length - cols
        left = extra // 2
        edges = projections.shape[:-1]
        padded = torch.cat([projections[..., :1].expand(*edges, left), projections,
                            projections[..., -1:].expand(*edges, extra - left)], dim=-1)  # 5x F.pad's "replicate"
        spectrum = torch.fft.rfft(padded, dim=-1)
        out = torch.fft.irfft(spectrum.mul_(response), n=length, dim=-1)
        return out[..., left:left + cols]
    if pad_mode != "zero":
        raise ReconInputError(f"pad mode {pad_mode!r} unknown; use 'edge' or 'zero'")
    spectrum = torch.fft.rfft(projections, n=length, dim=-1)
    return torch.fft.irfft(spectrum * response, n=length, dim=-1)[..., :cols]
