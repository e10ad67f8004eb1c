"""Direct Fourier reconstruction of parallel-beam slices by gridding (a type-1 NUFFT in torch).

The 1D transform of a projection at angle theta is the slice of the object's 2D
transform along n(theta) = (cos theta, -sin theta) (Fourier slice theorem). With the
same padded length L, ramp filter H_k and angular weights w_j as filtered
back-projection, the slice is

    f(x) = Re sum_j sum_{k=0}^{L/2} c_k w_j / (L pixel) H_k P_jk e^{2 pi i k (cor + pad) / L} e^{2 pi i xi_jk . x}

with xi_jk = k v / (L pixel) n(theta_j) in cycles per voxel (c_k = 2 inside, 1 at 0 and
L/2): exactly FBP with band-limited (trigonometric) instead of linear interpolation
along the detector. The sum over the polar points xi_jk is evaluated by gridding:
each point is spread with a Kaiser-Bessel kernel of ``kernel_width`` cells onto a
grid oversampled twice, one inverse FFT, and division by the kernel's transform
(deapodisation) (Beatty et al. 2005 for the kernel's shape parameter). Cost:
angles x L/2 x width^2 scatter-adds plus one FFT of (2 ny) x (2 nx) per slice, against
angles x ny x nx for back-projection. Every step is a differentiable torch operation.

On the CPU, when no gradient is wanted and the ``finufft`` package is installed, the
sum over the points is handed to FINUFFT (the same type-1 transform, at the kernel's
accuracy, ~10x faster than the torch gridding on one core); results agree to that
accuracy (tests/test_recon_algorithms.py).

Noise: back-projection interpolates the filtered projections linearly along the
detector, which passes, averaged over the sub-pixel positions the voxels fall on, a
noise power (2 + cos 2 pi f) / 3 at f cycles per pixel (1/3 at Nyquist); the
trigonometric interpolation of the sum above passes all of it. With the same ramp, the
Fourier method's noise variance on a white-noise sinogram was 2.16x FBP's (Ram-Lak),
which made it less accurate on noisy data although sharper on exact data. By default
(``match_fbp_noise``) the spectrum is therefore multiplied by the square root of that
power transfer: the noise variance equals FBP's for every filter, while the signal
response (1 - pi^2 f^2 / 3 + ..., 0.58 at Nyquist) stays above linear interpolation's
sinc^2 (f) (same to second order, 0.41 at Nyquist) and no aliasing is added, so the
RMSE is at most FBP's (docs/recon.md, "Noise").
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:
    import finufft
except ImportError:  # optional: the torch gridding below does the same, slower on CPU
    finufft = None

from .filters import linear_interpolation_power
from .geometry import VolumeGrid, as_tensor

OVERSAMPLING = 2
GRID_ELEMENTS = 2**25
"""Largest oversampled grid (cells x slices) held at once."""


def kernel_beta(width: int, oversampling: float = OVERSAMPLING) -> float:
    """Kaiser-Bessel shape parameter for this width and oversampling (Beatty et al. 2005)."""
    return math.pi * math.sqrt((width / oversampling) ** 2 * (oversampling - 0.5) ** 2 - 0.8)


def _kernel(distance: torch.Tensor, width: int, beta: float) -> torch.Tensor:
    """Kaiser-Bessel window I0(beta sqrt(1 - (2 t / W)^2)) at grid distances t (0 outside |t| < W/2)."""
    arg = (1 - (2 * distance / width) ** 2).clamp_min(0)
    return torch.where(arg > 0, torch.special.i0(beta * torch.sqrt(arg)), torch.zeros_like(arg))


def _kernel_transform(f: torch.Tensor, width: int, beta: float) -> torch.Tensor:
    """Continuous Fourier transform of the kernel at frequencies ``f`` (cycles per grid cell)."""
    s = torch.sqrt((beta**2 - (math.pi * width * f) ** 2).clamp_min(1e-12))
    return width * torch.sinh(s) / s


def _taps(position: torch.Tensor, width: int, beta: float, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid cells (mod ``size``) and kernel weights of each point: two (points, width) tensors."""
    first = torch.floor(position - width / 2) + 1
    cells = first[:, None] + torch.arange(width, device=position.device, dtype=position.dtype)[None, :]
    weights = _kernel(position[:, None] - cells, width, beta)
    return torch.remainder(cells.long(), size), weights


def fourier_slices(projections: torch.Tensor, weights: torch.Tensor, angles_rad: torch.Tensor,
                   cor: torch.Tensor | float, pixel_mm: float, volume: VolumeGrid, response: torch.Tensor,
                   pad_mode: str = "edge", kernel_width: int = 4, match_fbp_noise: bool = True) -> torch.Tensor:
    """Slices (nz, ny, nx) from unfiltered line integrals (angles, nz, cols), angular ``weights`` (angles, 1).

    ``response``: the ramp filter's rfft (filters.ramp_response) of the padded length.
    ``match_fbp_noise``: shape the spectrum by linear interpolation's noise power transfer
    (module docstring), so that noise comes out as in FBP; False keeps the exact
    band-limited interpolation (sharper, 2.2x the noise variance with Ram-Lak).
    """
    device = projections.device
    n_angles, nz, cols = projections.shape
    _, ny, nx = volume.shape
    length = 2 * (response.numel() - 1)
    left = (length - cols) // 2 if pad_mode == "edge" else 0
    if pad_mode == "edge":
        flat = projections.reshape(-1, 1, cols)
        padded = torch.nn.functional.pad(flat, (left, length - cols - left), mode="replicate")
        spectrum = torch.fft.rfft(padded.reshape(n_angles, nz, length), dim=-1)
    else:
        spectrum = torch.fft.rfft(projections, n=length, dim=-1)
    k = torch.arange(response.numel(), device=device, dtype=torch.float32)
    kappa = k * volume.voxel_mm / (length * pixel_mm)  # cycles per voxel
    keep = kappa <= 0.5
    k, kappa = k[keep], kappa[keep]
    multiplicity = torch.where((k == 0) | (k == length / 2), 1.0, 2.0)
    cor = as_tensor(cor, device)
    shift_x = 0.5 if nx % 2 == 0 else 0.0  # voxel centres sit at (n + shift) voxels, n integer
    shift_y = 0.5 if ny % 2 == 0 else 0.0
    cos, sin = torch.cos(angles_rad)[:, None], torch.sin(angles_rad)[:, None]
    xi_x = kappa[None, :] * cos
    xi_y = -kappa[None, :] * sin
    centre_x = volume.centre_mm[0] / volume.voxel_mm
    centre_y = volume.centre_mm[1] / volume.voxel_mm
    phase = 2 * math.pi * (k[None, :] * (cor + left) / length + xi_x * (shift_x + centre_x)
                           + xi_y * (shift_y + centre_y))
    detector_response = response[keep]
    if match_fbp_noise:
        detector_response = detector_response * torch.sqrt(linear_interpolation_power(k / length))
    scale = (multiplicity * detector_response)[None, :] * weights.reshape(n_angles, 1) / (length * pixel_mm)
    factor = torch.polar(scale, phase)  # (angles, k)
    values = spectrum[:, :, keep] * factor[:, None, :]  # (angles, nz, k)
    values = values.permute(0, 2, 1).reshape(-1, nz)
    xi_x, xi_y = xi_x.reshape(-1), xi_y.reshape(-1)
    if _use_finufft(values, xi_x, xi_y):
        return _nufft_finufft(values, xi_x, xi_y, ny, nx, kernel_width)
    return _nufft_torch(values, xi_x, xi_y, ny, nx, kernel_width)


def _use_finufft(*tensors: torch.Tensor) -> bool:
    """finufft does the sum when it is installed, the data are on the CPU and no gradient is wanted."""
    if finufft is None or any(t.device.type != "cpu" for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _nufft_finufft(values: torch.Tensor, xi_x: torch.Tensor, xi_y: torch.Tensor, ny: int, nx: int,
                   kernel_width: int) -> torch.Tensor:
    """Re sum_p values_p e^{2 pi i xi_p . n} on the (ny, nx) grid of n (FINUFFT type 1, same accuracy as the kernel)."""
    x = (2 * math.pi * xi_x).numpy().astype(np.float32)
    y = (2 * math.pi * xi_y).numpy().astype(np.float32)
    strengths = np.ascontiguousarray(values.T.numpy().astype(np.complex64))
    eps = max(10.0 ** -(kernel_width - 1), 1e-6)
    image = finufft.nufft2d1(y, x, strengths, (ny, nx), eps=eps, isign=1, nthreads=torch.get_num_threads())
    return torch.from_numpy(np.ascontiguousarray(image.real.reshape(-1, ny, nx)))


def _nufft_torch(values: torch.Tensor, xi_x: torch.Tensor, xi_y: torch.Tensor, ny: int, nx: int,
                 kernel_width: int) -> torch.Tensor:
    """The same sum by gridding in torch: differentiable, on any device."""
    device = values.device
    nz = values.shape[1]
    big_x, big_y = OVERSAMPLING * nx, OVERSAMPLING * ny
    beta = kernel_beta(kernel_width)
    cells_x, wx = _taps(xi_x * big_x, kernel_width, beta, big_x)
    cells_y, wy = _taps(xi_y * big_y, kernel_width, beta, big_y)
    n_x = torch.arange(nx, device=device) - nx // 2
    n_y = torch.arange(ny, device=device) - ny // 2
    deapodise = (_kernel_transform(n_y / big_y, kernel_width, beta)[:, None]
                 * _kernel_transform(n_x / big_x, kernel_width, beta)[None, :])
    rows_x, rows_y = torch.remainder(n_x, big_x), torch.remainder(n_y, big_y)
    slab = max(1, GRID_ELEMENTS // (big_x * big_y))
    out = []
    for z0 in range(0, nz, slab):
        part = values[:, z0:z0 + slab]
        grid = torch.zeros(big_y * big_x, part.shape[1], dtype=part.dtype, device=device)
        for dy in range(kernel_width):
            row_base = cells_y[:, dy] * big_x
            for dx in range(kernel_width):
                tap = (wy[:, dy] * wx[:, dx])[:, None]
                grid.index_add_(0, row_base + cells_x[:, dx], part * tap)
        image = torch.fft.ifft2(grid.T.reshape(-1, big_y, big_x)) * (big_x * big_y)
        image = image.index_select(1, rows_y).index_select(2, rows_x).real
        out.append(image / deapodise)
    return torch.cat(out, dim=0)
