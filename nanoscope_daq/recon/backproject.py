"""Voxel-driven back-projection in torch: parallel beam (linear interpolation) and cone beam (bilinear).

Both take already filtered and weighted projections and sum them into a z-y-x volume,
in chunks of angles so that memory stays bounded. Every step is a differentiable torch
operation: gradients flow to the projections and to the geometry (angles, ``cor``). On
the CPU, when no gradient is wanted, cone beam takes the compiled kernel of
cone_kernel.py instead (the same sums, ~20x faster), and sums into a given volume in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cone_kernel import backproject_cone_compiled
from .geometry import ConeGeometry, ParallelGeometry, VolumeGrid, as_tensor

CHUNK_ELEMENTS = 2**17
"""Voxels x angles one step of back-projection handles: small enough to stay in the CPU's cache (measured
5-10x faster than 2**24 on CPU), large enough that Python's loop costs little."""


def detector_rows_at(z_mm: torch.Tensor, centre_row: float, pixel_mm: float) -> torch.Tensor:
    """Fractional detector row of heights ``z_mm`` (parallel beam: rows grow with +z)."""
    return centre_row + z_mm / pixel_mm


def parallel_slices(projections: torch.Tensor, geometry: ParallelGeometry, volume: VolumeGrid) -> torch.Tensor:
    """Projections (angles, rows, cols) resampled to the volume's slice heights: (angles, nz, cols).

    Parallel-beam slices are independent; a slice at a fractional row is interpolated
    linearly between rows, and a slice outside the detector is zero.
    """
    rows = detector_rows_at(volume.axis(2, projections.device), (geometry.rows - 1) / 2, geometry.pixel_mm)
    nearest = torch.round(rows)
    if torch.allclose(rows, nearest, atol=1e-4) and bool(((nearest >= 0) & (nearest < geometry.rows)).all()):
        return projections.index_select(1, nearest.long())
    padded = F.pad(projections, (0, 0, 1, 1))
    position = (rows + 1).clamp(0, geometry.rows + 1)
    low = position.floor().clamp(max=geometry.rows).long()
    frac = (position - low)[None, :, None]
    return torch.lerp(padded.index_select(1, low), padded.index_select(1, low + 1), frac)


def backproject_parallel(filtered: torch.Tensor, angles_rad: torch.Tensor, cor: torch.Tensor | float,
                         pixel_mm: float, volume: VolumeGrid) -> torch.Tensor:
    """Sum of filtered projections (angles, nz, cols) along parallel rays into a (nz, ny, nx) volume.

    Column of voxel (x, y) at angle theta: cor + (x cos theta - y sin theta) / pixel,
    linear interpolation, zero outside the detector.
    """
    device = filtered.device
    n_angles, nz, cols = filtered.shape
    _, ny, nx = volume.shape
    x = volume.axis(0, device) / pixel_mm
    y = volume.axis(1, device) / pixel_mm
    padded = F.pad(filtered, (1, 1))  # zero column each side: out-of-detector samples read 0
    width = cols + 2
    flat = padded.permute(1, 0, 2).reshape(nz, -1)  # (nz, angles * width)
    cor = as_tensor(cor, device)
    cos_all, sin_all = torch.cos(angles_rad), torch.sin(angles_rad)
    tile_rows = max(1, min(ny, CHUNK_ELEMENTS // (nz * nx)))  # a tile of the volume stays in cache
    chunk = max(1, CHUNK_ELEMENTS // (nz * tile_rows * nx))
    tiles = []
    for y0 in range(0, ny, tile_rows):
        y_tile = y[y0:y0 + tile_rows]
        acc = torch.zeros(nz, y_tile.numel() * nx, device=device, dtype=filtered.dtype)
        for a0 in range(0, n_angles, chunk):
            cos, sin = cos_all[a0:a0 + chunk, None, None], sin_all[a0:a0 + chunk, None, None]
            count = cos.shape[0]
            column = (x[None, None, :] * cos - y_tile[None, :, None] * sin + cor + 1).reshape(count, -1)
            column = column.clamp(0, width - 1)
            low = column.floor().clamp(max=width - 2)
            frac = column - low
            index = (low.long() + (torch.arange(a0, a0 + count, device=device) * width)[:, None]).reshape(-1)
            lo = flat.index_select(1, index)
            hi = flat.index_select(1, index + 1)
            acc = acc + torch.lerp(lo, hi, frac.reshape(1, -1)).reshape(nz, count, -1).sum(dim=1)
        tiles.append(acc.reshape(nz, -1, nx))
    return torch.cat(tiles, dim=1)


def backproject_cone(filtered: torch.Tensor, angles_rad: torch.Tensor, geometry: ConeGeometry,
                     volume: VolumeGrid, out: torch.Tensor | None = None) -> torch.Tensor:
    """FDK back-projection of filtered, weighted cone-beam projections (angles, rows, cols) into (nz, ny, nx).

    Voxel p at angle theta: q = Rz(theta) p + (axis offset, 0, 0); it projects to
    column central_col + q_x M(q) / pixel, row central_row + q_z M(q) / pixel with
    M(q) = SDD / (SOD + q_y), and is weighted by (SOD / (SOD + q_y))^2 (bilinear, zero
    outside the detector). ``out``: a volume to add the back-projection into (returned);
    the compiled kernel sums in place into one laid out as ``cone_kernel.kernel_volume``.
    """
    device = filtered.device
    n_angles, rows, cols = filtered.shape
    nz, ny, nx = volume.shape
    x = volume.axis(0, device)
    y = volume.axis(1, device)
    z = volume.axis(2, device)
    sod, sdd, pixel = geometry.source_sample_mm, geometry.source_detector_mm, geometry.pixel_mm
    axis_x = (as_tensor(geometry.cor_value(), device) - geometry.central_col) * pixel / geometry.magnification
    values = (filtered, angles_rad, axis_x, sod, sdd, geometry.central_col, geometry.central_row)
    if device.type == "cpu" and not (torch.is_grad_enabled() and any(
            isinstance(v, torch.Tensor) and v.requires_grad for v in values)):
        summed = backproject_cone_compiled(
            filtered.detach().float().numpy(), angles_rad.detach().double().numpy(), x.double().numpy(),
            y.double().numpy(), z.double().numpy(), sod=float(sod), sdd=float(sdd), pixel_mm=float(pixel),
            central_col=float(geometry.central_col), central_row=float(geometry.central_row),
            axis_x_mm=float(axis_x), out=None if out is None else out.numpy())
        return torch.from_numpy(summed).to(filtered.dtype) if out is None else out
    total = torch.zeros(nz, ny * nx, device=device, dtype=filtered.dtype)
    chunk = max(1, CHUNK_ELEMENTS // (nz * ny * nx))
    for a0 in range(0, n_angles, chunk):
        theta = angles_rad[a0:a0 + chunk]
        count = theta.numel()
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        qx = x[None, None, :] * cos - y[None, :, None] * sin + axis_x
        depth = sod + x[None, None, :] * sin + y[None, :, None] * cos
        scale = (sdd / depth).reshape(count, 1, ny * nx)
        column = geometry.central_col + qx.reshape(count, 1, ny * nx) * scale / pixel
        row = geometry.central_row + z[None, :, None] * scale / pixel
        grid = torch.stack([((2 * column + 1) / cols - 1).expand(-1, nz, -1), (2 * row + 1) / rows - 1], dim=-1)
        sampled = F.grid_sample(filtered[a0:a0 + chunk, None], grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)[:, 0]
        weight = (sod / depth).reshape(count, 1, ny * nx) ** 2
        total = total + (sampled * weight).sum(dim=0)
    total = total.reshape(nz, ny, nx)
    return total if out is None else out.add_(total)
