"""Tomographic reconstruction in torch: preprocessing, geometry, FBP / FDK / Fourier, centre of rotation.

The same code runs offline (``nanoscope recon``, :func:`offline.reconstruct_file`) and
online (:class:`IncrementalFBP`), on CPU or CUDA (``device``), and is differentiable
in the projections and the geometry. docs/recon.md describes algorithms, conventions
and measured accuracy and speed.
"""

from __future__ import annotations

from .algorithms import ALGORITHMS, FilterSpec, reconstruct
from .calibrate import CalibrationResult, calibrate_geometry
from .cor import CorResult, find_cor
from .errors import ReconInputError
from .filters import FILTERS
from .geometry import ConeGeometry, ParallelGeometry, VolumeGrid
from .incremental import IncrementalFBP
from .motion import MotionResult, estimate_motion
from .phase import paganin_filter
from .preprocess import FlatField, build_flat_field, normalise, remove_zingers, to_line_integrals
from .rings import remove_rings
from .weights import check_angles, projection_weights

__all__ = [
    "ALGORITHMS", "FILTERS", "CalibrationResult", "ConeGeometry", "CorResult", "FilterSpec", "FlatField",
    "IncrementalFBP", "MotionResult", "ParallelGeometry", "ReconInputError", "VolumeGrid", "build_flat_field",
    "calibrate_geometry", "check_angles", "estimate_motion", "find_cor", "normalise", "paganin_filter",
    "projection_weights", "reconstruct", "remove_rings", "remove_zingers", "to_line_integrals",
]
