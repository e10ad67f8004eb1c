"""Known operators for any detector pose and rigid motion: differentiable forward and back-projection.

The ray geometry of a scan (geometry.py's conventions) with everything a calibration or a
motion correction may want to estimate as a torch tensor that can require gradients: the
axis column ``cor``, the detector's in-plane ``tilt_deg`` and (cone beam) ``roll_deg``,
the source-detector distance, the detector offset, the angles, and a rigid translation
of the specimen per projection (``shifts_mm``, (angles, 3), lab x, y, z).

* A specimen point p at angle theta sits at q = Rz(theta) p + (axis_x, 0, 0) + shift in the
  lab; it is seen at the detector pixel where the ray through it (from the source, or
  along +y) meets the detector plane.
* :func:`backproject`: voxel-driven, bilinear in the detector (as backproject.py's cone
  back-projection, which is this function on an aligned detector), FDK's distance weight
  (SOD / (SOD + q_y))^2 for a cone beam.
* :func:`forward_project`: ray-driven, the volume sampled trilinearly every
  ``step_voxels`` voxels along each pixel's central ray (Joseph-like), times the step's
  length.

Both are sums of differentiable torch operations, chunked to bound memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .geometry import ConeGeometry, Geometry, VolumeGrid, as_tensor

CHUNK_POINTS = 2**20
"""Sample points one step of forward projection handles."""
BACKPROJECT_ELEMENTS = 2**17
"""Voxels x angles one step of back-projection handles (backproject.py's measured cache-friendly size)."""


@dataclass(frozen=True)
class DetectorFrame:
    """The detector in the lab (mm): a reference pixel (col0, row0) at ``origin``, unit column and row directions.

    ``source`` is the focal spot, or None for a parallel beam along +y; ``axis_x`` is
    the lab x of the rotation axis; ``sod`` the source-axis distance (cone beam).
    """

    source: torch.Tensor | None
    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    col0: torch.Tensor
    row0: torch.Tensor
    pixel_mm: float
    axis_x: torch.Tensor
    sod: torch.Tensor | None

    @property
    def normal(self) -> torch.Tensor:
        return torch.linalg.cross(self.u, self.v)

    def pixel_points(self, cols: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Lab positions (len(rows), len(cols), 3) of fractional detector columns and rows."""
        a = (cols - self.col0) * self.pixel_mm
        b = (rows - self.row0) * self.pixel_mm
        return self.origin + a[None, :, None] * self.u + b[:, None, None] * self.v

    def detector_position(self, qx: torch.Tensor, qy: torch.Tensor,
                          qz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fractional (column, row) where the ray through lab point (qx, qy, qz) meets the detector (broadcast)."""
        n = self.normal
        if self.source is None:  # along +y to the plane
            dx, dy, dz = qx - self.origin[0], qy - self.origin[1], qz - self.origin[2]
            step = -(n[0] * dx + n[1] * dy + n[2] * dz) / n[1]
            rel = (dx, dy + step, dz)
        else:
            s = self.source
            dx, dy, dz = qx - s[0], qy - s[1], qz - s[2]
            reach = torch.dot(n, self.origin - s) / (n[0] * dx + n[1] * dy + n[2] * dz)
            rel = (s[0] + reach * dx - self.origin[0], s[1] + reach * dy - self.origin[1],
                   s[2] + reach * dz - self.origin[2])
        col = self.col0 + (rel[0] * self.u[0] + rel[1] * self.u[1] + rel[2] * self.u[2]) / self.pixel_mm
        row = self.row0 + (rel[0] * self.v[0] + rel[1] * self.v[1] + rel[2] * self.v[2]) / self.pixel_mm
        return col, row


def detector_frame(geometry: Geometry, device: torch.device | str, dtype: torch.dtype = torch.float32) -> DetectorFrame:
    """The geometry's detector in the lab; differentiable in its tensor fields."""
    def t(value) -> torch.Tensor:
        return as_tensor(value, device, dtype)

    tilt = t(geometry.tilt_deg) * (math.pi / 180)
    roll = t(getattr(geometry, "roll_deg", 0.0)) * (math.pi / 180)
    zero = torch.zeros((), device=device, dtype=dtype)
    # R_x(roll) R_y(tilt) applied to +x and +z.
    u = torch.stack([torch.cos(tilt), torch.sin(tilt) * torch.sin(roll), -torch.sin(tilt) * torch.cos(roll)])
    v = torch.stack([torch.sin(tilt), -torch.cos(tilt) * torch.sin(roll), torch.cos(tilt) * torch.cos(roll)])
    if isinstance(geometry, ConeGeometry):
        sod, sdd = t(geometry.source_sample_mm), t(geometry.source_detector_mm)
        col0, row0 = t(geometry.central_col), t(geometry.central_row)
        axis_x = (t(geometry.cor_value()) - col0) * geometry.pixel_mm * sod / sdd
        return DetectorFrame(torch.stack([zero, zero - sod, zero]), torch.stack([zero, sdd - sod, zero]), u, v,
                             col0, row0, geometry.pixel_mm, axis_x, sod)
    origin = torch.zeros(3, device=device, dtype=dtype)
    return DetectorFrame(None, origin, u, v, t(geometry.cor_value()), t((geometry.rows - 1) / 2), geometry.pixel_mm,
                         zero, None)


def _shifts(shifts_mm: torch.Tensor | None, count: int, device: torch.device | str) -> torch.Tensor:
    if shifts_mm is None:
        return torch.zeros(count, 3, device=device)
    return as_tensor(shifts_mm, device).reshape(count, 3)


def backproject(filtered: torch.Tensor, angles_rad: torch.Tensor, geometry: Geometry, volume: VolumeGrid,
                shifts_mm: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of filtered, weighted projections (angles, rows, cols) into a (nz, ny, nx) volume (bilinear, 0 outside).

    Cone beam: each sample weighted by (SOD / (SOD + q_y))^2 (FDK).
    """
    device = filtered.device
    n_angles, rows, cols = filtered.shape
    nz, ny, nx = volume.shape
    frame = detector_frame(geometry, device)
    shifts = _shifts(shifts_mm, n_angles, device)
    x = volume.axis(0, device)[None, None, None, :]
    y = volume.axis(1, device)[None, None, :, None]
    z = volume.axis(2, device)[None, :, None, None]
    out = torch.zeros(nz, ny * nx, device=device, dtype=filtered.dtype)
    chunk = max(1, BACKPROJECT_ELEMENTS // (nz * ny * nx))
    for a0 in range(0, n_angles, chunk):
        theta = angles_rad[a0:a0 + chunk, None, None, None]
        shift = shifts[a0:a0 + chunk, :, None, None, None]
        count = theta.shape[0]
        qx = x * torch.cos(theta) - y * torch.sin(theta) + frame.axis_x + shift[:, 0]
        qy = x * torch.sin(theta) + y * torch.cos(theta) + shift[:, 1]
        qz = z + shift[:, 2]
        col, row = frame.detector_position(qx, qy, qz)
        col, row = torch.broadcast_tensors(col, row)
        grid = torch.stack([(2 * col + 1) / cols - 1, (2 * row + 1) / rows - 1], dim=-1).reshape(count, nz, ny * nx, 2)
        sampled = F.grid_sample(filtered[a0:a0 + chunk, None], grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)[:, 0]
        if frame.sod is not None:
            weight = (frame.sod / (frame.sod + qy)) ** 2
            sampled = sampled * weight.expand(count, nz, ny, nx).reshape(count, nz, ny * nx)
        out = out + sampled.sum(dim=0)
    return out.reshape(nz, ny, nx)


def forward_project(image: torch.Tensor, volume: VolumeGrid, geometry: Geometry, angles_rad: torch.Tensor,
                    shifts_mm: torch.Tensor | None = None, step_voxels: float = 0.5) -> torch.Tensor:
    """Line integrals (angles, rows, cols) of the volume ``image`` (nz, ny, nx, 1/mm) through ``geometry``.

    Each pixel's central ray is sampled trilinearly every ``step_voxels`` voxels across the
    volume's bounding cylinder; values outside the volume are 0.
    """
    device = image.device
    nz, ny, nx = volume.shape
    n_angles = angles_rad.numel()
    frame = detector_frame(geometry, device)
    shifts = _shifts(shifts_mm, n_angles, device)
    rows, cols = geometry.rows, geometry.cols
    pixels = frame.pixel_points(torch.arange(cols, device=device, dtype=torch.float32),
                                torch.arange(rows, device=device, dtype=torch.float32)).reshape(-1, 3)
    voxel = volume.voxel_mm
    cx, cy, cz = volume.centre_mm
    reach = math.hypot(nx * voxel / 2 + abs(cx), ny * voxel / 2 + abs(cy)) + float(shifts[:, 1].detach().abs().max())
    samples = max(2, math.ceil(2 * reach / (step_voxels * voxel)))
    depth = torch.linspace(-reach, reach, samples, device=device)  # lab y of the samples
    dy = depth[1] - depth[0]
    if frame.source is None:
        points = torch.stack(torch.broadcast_tensors(pixels[:, None, 0], depth[None, :], pixels[:, None, 2]), dim=-1)
        length = dy.expand(pixels.shape[0])
    else:
        towards = pixels - frame.source
        fraction = (depth[None, :] - frame.source[1]) / towards[:, None, 1]
        points = frame.source + fraction[..., None] * towards[:, None, :]
        length = dy * torch.linalg.norm(towards, dim=1) / towards[:, 1]
    half = torch.tensor([nx * voxel / 2, ny * voxel / 2, nz * voxel / 2], device=device)
    centre = torch.tensor([cx, cy, cz], device=device)
    source = image[None, None]
    chunk = max(1, CHUNK_POINTS // (pixels.shape[0] * samples))
    out = []
    for a0 in range(0, n_angles, chunk):
        theta = angles_rad[a0:a0 + chunk, None, None]
        shift = shifts[a0:a0 + chunk, None, None, :]
        rel_x = points[None, ..., 0] - frame.axis_x - shift[..., 0]
        rel_y = points[None, ..., 1] - shift[..., 1]
        specimen = torch.stack([rel_x * torch.cos(theta) + rel_y * torch.sin(theta),
                                -rel_x * torch.sin(theta) + rel_y * torch.cos(theta),
                                (points[None, ..., 2] - shift[..., 2]).expand_as(rel_x)], dim=-1)
        grid = (specimen - centre) / half
        values = F.grid_sample(source, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)
        out.append(values[0, 0].sum(dim=-1) * length)
    return torch.cat(out).reshape(n_angles, rows, cols)
