"""What hides the lacunae in the demo's scans: breathing blur, noise and the segmentation, each on its own.

Run on the output of ``nanoscope demo --out D``::

    PYTHONPATH=. python benchmarks/bench_lacuna_visibility.py D [--days 0 5 10]

For each session it runs the demo's pore segmentation (analysis/longitudinal.py) on:

* the ground-truth attenuation blurred to the scans' resolution, without noise and with
  the session's own noise added; and the same blurred only to the resolution of the
  frames taken while the mouse rests (the gate open), as a reconstruction that undid the
  breathing would be. The blur is a Gaussian whose lacuna contrast matches the measured
  one; the noise is ``(A - B) / 2`` of the session's two tomograms A and B (the noise of
  their mean, exactly, with the scans' texture and no structure); the attenuation is put
  on the reconstruction's scale by a straight-line fit to the session's mean volume;
* the session's mean volume (what the demo measures);
* the gate-open frames of both tomograms reconstructed together (recon/weights.py fills
  one tomogram's gaps with the other's projections and the opposite side's);
* all frames of both tomograms with the breath undone: the respiratory motion model
  (recon/respiratory_motion.py, recon/joined_scans.py) fitted to both tomograms together, so that the first
  round's reference (their gate-open frames) has no gaps; the breath found is printed
  against the one the simulator applied.

It prints, per volume: the lacunae's contrast (their mean deficit against the cortex,
as a fraction of the sharp ground truth's), a high-pass standard deviation of the
cortex (noise and streaks), the porosity found over the ground truth's, the lacunae
counted, and the share of the pore voxels found that lie on a true pore (precision; a
segmentation of noise scores about the porosity itself). Writes JSON under
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from nanoscope_daq.analysis.labels import Code
from nanoscope_daq.analysis.longitudinal import bone_and_pore_labels
from nanoscope_daq.analysis.metrics import precision
from nanoscope_daq.analysis.morphometry import MorphometrySettings, morphometry
from nanoscope_daq.config import load_config
from nanoscope_daq.recon.algorithms import FilterSpec
from nanoscope_daq.recon.joined_scans import all_frames_volume, fit_breathing, gate_open_volume, join_scans
from nanoscope_daq.volume_files import read_provenance

RESULTS = Path(__file__).parent / "results"
BLUR_SIGMAS = np.arange(0.0, 3.01, 0.05)
"""Gaussian blurs (voxels) tried to match a measured lacuna contrast."""
CORE_DEPTH_VOXELS = 3


def lacuna_contrast(volume: np.ndarray, lacunae: np.ndarray, core: np.ndarray, sharp: float) -> float:
    """Mean deficit of the lacunae's voxels against the cortex's, over the sharp ground truth's."""
    return float(volume[core].mean() - volume[lacunae].mean()) / sharp


def contrast_after_blur(attenuation: np.ndarray, lacunae: np.ndarray, core: np.ndarray) -> np.ndarray:
    """The lacunae's share of their sharp contrast left by each Gaussian blur of ``BLUR_SIGMAS``."""
    sharp = lacuna_contrast(attenuation, lacunae, core, 1.0)
    return np.array([lacuna_contrast(ndimage.gaussian_filter(attenuation, s), lacunae, core, sharp) if s else 1.0
                     for s in BLUR_SIGMAS])


def blur_matching(contrasts: np.ndarray, contrast: float) -> float:
    """The Gaussian blur (voxels) that leaves the lacunae ``contrast`` (``contrasts``: contrast_after_blur)."""
    return float(np.interp(-contrast, -contrasts, BLUR_SIGMAS))  # contrast falls as the blur grows


def session_files(directory: Path) -> dict[float, dict[str, list[Path]]]:
    """Per study day: the time series' NXtomo files and their online volumes of all frames."""
    found: dict[float, dict[str, list[Path]]] = {}
    for nxs in sorted(directory.rglob("time_series_*.nxs")):
        with h5py.File(nxs, "r") as h5:
            day = float(h5["entry/sample/subject/day"][()])
        entry = found.setdefault(day, {"nxs": [], "volumes": []})
        entry["nxs"].append(nxs)
        volume = nxs.with_name(nxs.stem + "_recon.h5")
        with h5py.File(volume, "r") as h5:
            if read_provenance(h5).get("selection") != "all":
                raise ValueError(f"{volume} is not a reconstruction of all frames")
        entry["volumes"].append(volume)
    return found


def measure(name: str, volume: np.ndarray, truth: dict, settings: MorphometrySettings) -> dict:
    labels = bone_and_pore_labels(volume)
    found = morphometry(labels, truth["voxel_um"], settings)
    pores = labels == Code.LCN
    high_pass = volume - ndimage.gaussian_filter(volume, 2.0)
    return {"volume": name,
            "lacuna_contrast": lacuna_contrast(volume, truth["lacunae"], truth["core"],
                                               truth["sharp"] * truth["scale"]),
            "high_pass_sd_per_mm": float(high_pass[truth["core"]].std()),
            "porosity_over_truth": found.porosity / truth["porosity"],
            "lacunae": found.lacunae.count, "lacunae_truth": truth["count"],
            "precision": precision(pores, truth["lacunae"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_out", type=Path, help="the --out folder of a finished `nanoscope demo`")
    parser.add_argument("--days", type=float, nargs="*", help="study days (default: every session)")
    args = parser.parse_args()
    config = load_config(args.demo_out / "demo.toml")
    analysis = config.analysis
    settings = MorphometrySettings(analysis.lacuna_min_volume_um3, analysis.lacuna_min_thickness_um,
                                   analysis.thickness_step_voxels)
    sessions = session_files(args.demo_out / "data")
    rows = []
    for day in args.days or sorted(sessions):
        began = time.perf_counter()
        files = sessions[day]
        truth_file = next((args.demo_out / "data").rglob(f"ground_truth_day{day:g}_bin1.h5"))
        with h5py.File(truth_file, "r") as h5:
            labels, attenuation = h5["labels"][()], h5["attenuation"][()].astype(np.float32)
            voxel_um = float(h5["labels"].attrs["voxel_size_um"])
        tomograms = []
        for path in files["volumes"]:
            with h5py.File(path, "r") as h5:
                tomograms.append(h5["volume"][()].astype(np.float32))
                cor = float(h5["provenance"].attrs["cor_column"])
        first, second = tomograms[:2]
        mean, noise = (first + second) / 2, (first - second) / 2
        lacunae = labels == Code.LCN
        core = ndimage.binary_erosion(labels == Code.BONE, iterations=CORE_DEPTH_VOXELS)
        measured = morphometry(labels, voxel_um, settings)
        sharp = lacuna_contrast(attenuation, lacunae, core, 1.0)
        scale = float(mean[core].mean() / attenuation[core].mean())  # the reconstruction's units per 1/mm of truth
        contrasts = contrast_after_blur(attenuation, lacunae, core)
        scans_sigma = blur_matching(contrasts, lacuna_contrast(mean, lacunae, core, sharp * scale))
        slope, intercept = np.polyfit(ndimage.gaussian_filter(attenuation, scans_sigma).ravel(), mean.ravel(), 1)
        truth = {"voxel_um": voxel_um, "lacunae": lacunae, "core": core, "sharp": sharp, "scale": scale,
                 "porosity": measured.porosity, "count": measured.lacunae.count}
        spec = FilterSpec(config.recon.filter, config.recon.filter_cutoff, config.recon.pad_mode)
        session = join_scans(files["nxs"], cor, config.recon)
        gated = gate_open_volume(session, spec)
        shifts, breath = fit_breathing(session, spec, config.recon)
        corrected = all_frames_volume(session, spec, shifts)
        physiology = config.sim.phantom
        truth_direction = np.array([physiology.respiration_direction_x, physiology.respiration_direction_y,
                                    physiology.respiration_direction_z])
        truth_direction = truth_direction / np.linalg.norm(truth_direction)
        print(f"  breath found: peak {1000 * breath['peak_mm']:.1f} um at phase {breath['peak_phase']:.2f}, direction "
              f"{np.round(breath['direction'], 3).tolist()} (applied: peak "
              f"{1000 * config.sim.physiology.respiration_amplitude_mm:.1f} um, direction "
              f"{np.round(truth_direction, 3).tolist()}), {breath['seconds']} s, binning {breath['binning']}")
        rest_sigma = blur_matching(contrasts, lacuna_contrast(gated, lacunae, core, sharp * scale))
        volumes = {
            f"truth at the scans' blur ({scans_sigma:.2f} vx), no noise":
                intercept + slope * ndimage.gaussian_filter(attenuation, scans_sigma),
            f"truth at the scans' blur ({scans_sigma:.2f} vx) + the session's noise":
                intercept + slope * ndimage.gaussian_filter(attenuation, scans_sigma) + noise,
            f"truth at the resting blur ({rest_sigma:.2f} vx), no noise":
                intercept + slope * ndimage.gaussian_filter(attenuation, rest_sigma),
            f"truth at the resting blur ({rest_sigma:.2f} vx) + the session's noise":
                intercept + slope * ndimage.gaussian_filter(attenuation, rest_sigma) + noise,
            "the session's mean volume (the demo)": mean,
            "gate-open frames of both tomograms": gated,
            "all frames of both tomograms, breath undone": corrected,
        }
        print(f"day {day:g}: ground truth porosity {100 * measured.porosity:.2f} %, {measured.lacunae.count} lacunae")
        print(f"  {'volume':62s} {'contrast':>8s} {'hp sd':>7s} {'poro/truth':>10s} {'lacunae':>7s} {'precision':>9s}")
        for name, volume in volumes.items():
            if volume.shape != mean.shape:
                raise ValueError(f"{name}: shape {volume.shape} does not match the online volumes {mean.shape}")
            row = {"day": day, **measure(name, volume.astype(np.float32), truth, settings)}
            if name.endswith("breath undone"):
                row["breath"] = breath
            rows.append(row)
            print(f"  {name:62s} {row['lacuna_contrast']:8.3f} {row['high_pass_sd_per_mm']:7.2f} "
                  f"{row['porosity_over_truth']:10.2f} {row['lacunae']:7d} {row['precision']:9.3f}")
        print(f"  ({time.perf_counter() - began:.0f} s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lacuna_visibility.json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {RESULTS / 'lacuna_visibility.json'}")


if __name__ == "__main__":
    main()
