"""Ring-artifact removal in the sinogram (column-mean detrending).

A detector pixel that responds differently from its neighbours adds the same offset to
its column of every projection: a stripe in each sinogram, a ring in the slice. Per
detector row, the offset is the column's mean over all angles minus a median-smoothed
version of that mean (width ``width_px``, odd); it is subtracted from every angle
(Boin & Haibel 2006; Rivers 1998). Object structure that is constant over the whole
rotation (material exactly on the axis) is smooth across columns and survives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ReconInputError


def remove_rings(line_integrals: torch.Tensor, width_px: int) -> torch.Tensor:
    """Line integrals (angles, rows, cols) with per-column offsets removed (``width_px`` 0: unchanged)."""
    if width_px == 0:
        return line_integrals
    if width_px < 3 or width_px % 2 == 0:
        raise ReconInputError(f"ring filter width {width_px} must be an odd number of pixels >= 3 (or 0: off)")
    profile = line_integrals.mean(dim=0)  # (rows, cols)
    half = width_px // 2
    padded = F.pad(profile[:, None], (half, half), mode="replicate")[:, 0]
    smooth = padded.unfold(-1, width_px, 1).median(dim=-1).values
    return line_integrals - (profile - smooth)[None]
