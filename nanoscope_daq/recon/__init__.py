"""Tomographic reconstruction in torch: preprocessing, geometry, FBP / FDK / Fourier, centre of rotation.

The same code runs offline (``nanoscope recon``, :func:`offline.reconstruct_file`) and
online (:class:`IncrementalFBP`), on CPU or CUDA (``device``), and is differentiable
in the projections and the geometry. docs/recon.md describes algorithms, conventions
and measured accuracy and speed.

Names load on first use (lazy_loader): importing the package, or its light modules
(``cli``, ``nxtomo_reader``, ``errors``), does not load torch, so ``nanoscope recon``
refuses a bad file in a fraction of a second.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "algorithms": ["ALGORITHMS", "FilterSpec", "reconstruct"],
    "calibrate": ["CalibrationResult", "calibrate_geometry"],
    "conjugate_rays": ["DistanceCalibration", "calibrate_distance"],
    "cor": ["CorResult", "find_cor"],
    "errors": ["ReconInputError"],
    "filters": ["FILTERS"],
    "geometry": ["ConeGeometry", "ParallelGeometry", "VolumeGrid"],
    "incremental": ["IncrementalFBP"],
    "motion": ["MotionResult", "estimate_motion"],
    "phase": ["paganin_filter"],
    "preprocess": ["FlatField", "build_flat_field", "normalise", "remove_zingers", "to_line_integrals"],
    "rings": ["remove_rings"],
    "weights": ["check_angles", "projection_weights"],
})
