"""A session's tomograms of one specimen joined into one scan, and its volumes with and without the breath.

A retrospectively gated scan keeps every frame with its respiratory phase and gate. One
tomogram's gate-open frames leave gaps in angle (the rests between breaths); the session's
tomograms, taken one after the other without moving the specimen, fill each other's gaps.
Joined (their projections and angles concatenated, their breaths numbered apart), they
reconstruct three ways: the gate-open frames only (weights.py weights each by its
coverage of the half circle), every frame as it is (the breath blurs the volume), and
every frame with the breath undone (``fit_breathing``: the respiratory model of respiratory_motion.py,
fitted to the joined scan so that its first round's reference, the gate-open frames,
has no gaps; docs/recon.md, "Breathing of the simulated mouse").
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ReconConfig
from .algorithms import FilterSpec, reconstruct
from .geometry import Geometry
from .nxtomo_reader import NxTomoScan
from .offline import line_integrals
from .respiratory_motion import breath_numbers, estimate_respiratory_motion
from .self_calibration import binned, calibration_binning


@dataclass
class JoinedScans:
    """The line integrals of a session's tomograms joined: geometry over all their angles, each projection's
    respiratory phase, gate and breath (numbered apart per tomogram)."""

    line_integrals: np.ndarray
    geometry: Geometry
    phase: np.ndarray
    gate: np.ndarray
    breath: np.ndarray


def join_scans(files: list[Path], cor: float, settings: ReconConfig, device: str = "cpu") -> JoinedScans:
    """Every projection of the NXtomo ``files`` (one specimen, not moved between them), as line integrals with the
    rotation axis at detector column ``cor``; preprocessing as ``settings`` (the [recon] section) says."""
    stacks, angles, phases, gates, breaths = [], [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for number, path in enumerate(files):
            with NxTomoScan(path) as scan:
                geometry = scan.geometry(None).with_cor(cor)
                stacks.append(line_integrals(scan, geometry, settings, None, Path(folder), device))
                phase, gate = scan.respiration()
            angles.append(geometry.angles_array)
            phases.append(phase)
            gates.append(gate)
            breaths.append(breath_numbers(phase) + number * (phase.size + 1))
    return JoinedScans(np.concatenate(stacks), geometry.with_angles(np.concatenate(angles)), np.concatenate(phases),
                       np.concatenate(gates), np.concatenate(breaths))


def gate_open_volume(scans: JoinedScans, spec: FilterSpec) -> np.ndarray:
    """The gate-open projections of ``scans`` reconstructed together (FDK; weights.py fills one tomogram's gaps with
    the other's projections and the opposite side's)."""
    still = scans.gate > 0.5
    geometry = scans.geometry.with_angles(scans.geometry.angles_array[still])
    return reconstruct(torch.from_numpy(scans.line_integrals[still]), geometry, algorithm="fdk", filter=spec).numpy()


def all_frames_volume(scans: JoinedScans, spec: FilterSpec, shifts_mm: np.ndarray | None = None) -> np.ndarray:
    """Every projection of ``scans`` reconstructed together (FDK), each moved back by its lab shift ``shifts_mm``
    (projections, 3) when given, as it is otherwise."""
    shifts = None if shifts_mm is None else torch.from_numpy(shifts_mm).float()
    return reconstruct(torch.from_numpy(scans.line_integrals), scans.geometry, algorithm="fdk", filter=spec,
                       shifts_mm=shifts).numpy()


def fit_breathing(scans: JoinedScans, spec: FilterSpec, settings: ReconConfig,
                  axial: bool = True) -> tuple[np.ndarray, dict]:
    """The breath of ``scans`` fitted to all their projections: each projection's lab shift (projections, 3; mm, to
    give ``all_frames_volume``) and the fit's record (the breath's peak, direction and depths, the binning, seconds,
    evaluations and the mismatch before and after).

    The breath is estimated on the projections binned as ``nanoscope recon --motion respiratory`` bins them
    (self_calibration.calibration_binning) with ``settings.calibration_evaluations``; ``axial``: as
    estimate_respiratory_motion (False: the breath across the axis only).
    """
    factor = calibration_binning(scans.geometry, settings)
    data, small = binned(scans.line_integrals, scans.geometry, factor)
    motion, breathing = estimate_respiratory_motion(data, small, scans.phase, scans.gate, scans.breath,
                                                    filter=spec, evaluations=settings.calibration_evaluations,
                                                    axial=axial)
    record = {**breathing.record(), "binning": factor, "seconds": round(motion.seconds, 1),
              "evaluations": motion.evaluations, "objective": [motion.objective_start, motion.objective]}
    return motion.shifts_mm, record
