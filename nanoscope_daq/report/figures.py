"""The study report's figures: matplotlib (Agg), one PNG each, from plain arrays (no instrument, no files read).

Each function draws one figure, saves it under the given path and returns that path.
Volumes are z-y-x with cubic voxels of ``voxel_um``; slices are drawn in micrometres.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 -- the backend is chosen first
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

DPI = 110
OVERLAY = {2: ("bone", "#f2c14e"), 3: ("pores / lacunae", "#e4572e")}
"""Label code: (legend, colour) drawn over a slice."""
CHANGE = {1: ("quiescent", "#9e9e9e"), 2: ("formed", "#2a9d8f"), 3: ("resorbed", "#d62828")}
"""Remodelling map code: (legend, colour)."""


def _save(fig, path: Path, bottom: float = 0.0) -> Path:
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _extent_um(shape: tuple[int, int], voxel_um: float) -> list[float]:
    rows, cols = shape
    return [0.0, cols * voxel_um, rows * voxel_um, 0.0]


def _overlay(ax, codes: np.ndarray, colours: Mapping[int, tuple[str, str]], extent: list[float], alpha: float):
    lut = ["#00000000"] * (max(colours) + 1)
    for code, (_, colour) in colours.items():
        lut[code] = colour
    masked = np.ma.masked_where(~np.isin(codes, list(colours)), codes)
    ax.imshow(masked, cmap=ListedColormap(lut), vmin=0, vmax=len(lut) - 1, alpha=alpha, extent=extent,
              interpolation="nearest")


def projection_figure(path: Path, transmission: np.ndarray, pixel_um: float, title: str) -> Path:
    """A flat-field corrected projection (transmission I / I0) with a colour bar, axes in um at the sample."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    image = ax.imshow(transmission, cmap="gray", extent=_extent_um(transmission.shape, pixel_um))
    ax.set(xlabel="detector x at the sample (um)", ylabel="detector y at the sample (um)", title=title)
    fig.colorbar(image, ax=ax, label="transmission I / I0")
    return _save(fig, path)


def orthogonal_slices_figure(path: Path, volumes: Mapping[float, np.ndarray], labels: Mapping[float, np.ndarray],
                             voxel_um: float, units: str) -> Path:
    """Per study day (rows): the mid xy, xz and yz slices, the segmentation overlaid."""
    fig, axes = plt.subplots(len(volumes), 3, figsize=(12, 3.6 * len(volumes)), squeeze=False, layout="constrained")
    for row, (day, volume) in enumerate(volumes.items()):
        nz, ny, nx = volume.shape
        low, high = np.percentile(volume, [1, 99.5])
        cuts = [("xy (mid z)", volume[nz // 2], labels[day][nz // 2], "x (um)", "y (um)"),
                ("xz (mid y)", volume[:, ny // 2], labels[day][:, ny // 2], "x (um)", "z (um)"),
                ("yz (mid x)", volume[:, :, nx // 2], labels[day][:, :, nx // 2], "y (um)", "z (um)")]
        for ax, (name, image, codes, xlabel, ylabel) in zip(axes[row], cuts):
            extent = _extent_um(image.shape, voxel_um)
            shown = ax.imshow(image, cmap="gray", vmin=low, vmax=high, extent=extent)
            _overlay(ax, codes, OVERLAY, extent, 0.35)
            ax.set(xlabel=xlabel, ylabel=ylabel, title=f"day {day:g}: {name}")
        fig.colorbar(shown, ax=axes[row].tolist(), label=f"attenuation ({units})", shrink=0.8)
    axes[0, 0].legend(handles=[Patch(color=c, label=n) for n, c in OVERLAY.values()], loc="lower left", fontsize=8)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def morphometry_figure(path: Path, days: Sequence[float], measured: Mapping[str, Sequence[float]],
                       truth: Mapping[str, Sequence[float]]) -> Path:
    """BV/TV, Ct.Th, lacunar porosity and density against the study day: from the scans and the ground truth."""
    panels = [("bv_tv", "BV/TV", 1.0), ("ct_th_um", "Ct.Th (um)", 1.0), ("porosity", "lacunar porosity (%)", 100.0),
              ("lacuna_density_per_mm3", "lacuna density (1000 / mm^3)", 1e-3)]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.6))
    for ax, (key, label, scale) in zip(axes, panels):
        ax.plot(days, np.asarray(measured[key]) * scale, "o-", label="from the scans")
        ax.plot(days, np.asarray(truth[key]) * scale, "s--", label="ground truth")
        ax.set(xlabel="study day", ylabel=label, title=label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    return _save(fig, path)


def remodelling_map_figure(path: Path, change: np.ndarray, voxel_um: float, title: str) -> Path:
    """Formed, resorbed and quiescent bone (codes of CHANGE) in the mid xy and xz slices."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    nz, ny, _ = change.shape
    for ax, (name, image, ylabel) in zip(axes, [("xy (mid z)", change[nz // 2], "y (um)"),
                                                ("xz (mid y)", change[:, ny // 2], "z (um)")]):
        extent = _extent_um(image.shape, voxel_um)
        ax.imshow(np.zeros_like(image), cmap="gray", vmin=0, vmax=1, extent=extent)
        _overlay(ax, image, CHANGE, extent, 1.0)
        ax.set(xlabel="x (um)", ylabel=ylabel, title=f"{title}: {name}")
    fig.legend(handles=[Patch(color=c, label=n) for n, c in CHANGE.values()], loc="lower center", ncol=3, fontsize=9)
    return _save(fig, path, bottom=0.08)


def force_extension_figure(path: Path, extension_mm: np.ndarray, force_n: np.ndarray,
                           holds: Sequence[tuple[float, float, float]], yield_n: float | None) -> Path:
    """The force-extension curve of the loading, each scan hold (extension, force, commanded) marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(extension_mm * 1e3, force_n, "-", color="#264653", label="loading cell")
    for number, (extension, force, commanded) in enumerate(holds):
        ax.plot(extension * 1e3, force, "o", color="#e76f51", markersize=9,
                label="tomogram at the hold" if number == 0 else None)
        ax.annotate(f"scan {number + 1}: {force:.2f} N (set {commanded:g} N)", (extension * 1e3, force),
                    textcoords="offset points", xytext=(8, -12), fontsize=8)
    if yield_n is not None:
        ax.axhline(yield_n, color="#9b2226", linestyle=":", label=f"specimen yield ({yield_n:g} N)")
    ax.set(xlabel="extension (um)", ylabel="force (N)", title="In-situ loading: step, hold, scan")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def respiration_figure(path: Path, time_s: np.ndarray, phase: np.ndarray, gate: np.ndarray, title: str) -> Path:
    """The respiratory phase of each frame against time, with the gate's open periods shaded."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.plot(time_s, phase, ".-", markersize=3, color="#1d3557", label="respiratory phase of each frame")
    ax.fill_between(time_s, 0, 1, where=gate > 0.5, step="mid", color="#a8dadc", alpha=0.6,
                    label=f"gate open ({100 * np.mean(gate > 0.5):.0f} % of the frames)")
    ax.set(xlabel="time since the first projection (s)", ylabel="respiratory phase (cycles)", title=title,
           ylim=(0, 1.25))
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    return _save(fig, path)


def dose_figure(path: Path, runs: Sequence[tuple[str, float]], budget_gy: float, subject: str) -> Path:
    """Dose delivered by each run, stacked into the subject's cumulative dose, against the budget."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    cumulative = np.cumsum([gy for _, gy in runs])
    names = [name for name, _ in runs]
    ax.bar(names, [gy for _, gy in runs], bottom=np.r_[0.0, cumulative[:-1]], color="#457b9d",
           label="dose of the run")
    ax.plot(names, cumulative, "o-", color="#1d3557", label="cumulative")
    ax.axhline(budget_gy, color="#d62828", linestyle="--", label=f"budget {budget_gy:g} Gy")
    ax.set(ylabel="dose (Gy)", title=f"Dose to {subject}: {cumulative[-1]:.3f} of {budget_gy:g} Gy "
                                      f"({100 * cumulative[-1] / budget_gy:.0f} %)")
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(fontsize=8)
    return _save(fig, path)
