"""What limits the demo's remodelling rates: the same analysis on every kind of volume of one demo run.

Run on the output of ``nanoscope demo --out D`` (its NXtomo files, offline and online
volumes and the simulator's ground truth of each day)::

    PYTHONPATH=. python benchmarks/bench_remodeling_accuracy.py D [--first-day 0 --last-day 10] [--motion]

For each source of the two time points' volumes (ground-truth labels; the ground-truth
attenuation, noise- and blur-free; the offline reconstruction of one tomogram with the
automatic centre of rotation, the demo's path before issue 16, made here from the NXtomo
file; the online reconstruction of one tomogram, whole and gated, with the instrument's
centre; both tomograms of the session averaged) it prints MAR periosteal / endosteal, BFR
and MS/BS two ways: voxel counts (mean local thickness of the formed voxels, the method
before issue 16) and sub-voxel (formed volume over surface, analysis/apposition.py), with
and without registration. Writes the table as JSON under benchmarks/results/.

``--motion``: the breathing instead. Each session's two tomograms joined
(recon/joined_scans.py) and reconstructed from the gate-open frames (40 %), from every
frame as it is, and from every frame with the breath undone: the respiratory model
(recon/respiratory_motion.py) fitted to both together across the axis (``axial=False``:
the part along the limb is not found and a free fit can run away along it,
docs/recon.md), as fitted and completed by the axial part that the simulator's breath
direction adds to it. Beside them the ground truth and the online volumes (two tomograms
averaged, whole and gated); no registration (the simulated mouse lies still between
sessions). Prints the breath found in each session. The volumes take minutes per session
and are kept beside the NXtomo files as ``*_joined.h5`` (delete them to fit again).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np

from nanoscope_daq.analysis.labels import bone_tissue
from nanoscope_daq.analysis.longitudinal import bone_labels
from nanoscope_daq.analysis.morphometry import compartments
from nanoscope_daq.analysis.remodeling import _clusters, _solid, remodeling
from nanoscope_daq.analysis.thickness import local_thickness
from nanoscope_daq.config import Config, ReconConfig, load_config
from nanoscope_daq.recon.algorithms import FilterSpec
from nanoscope_daq.recon.joined_scans import all_frames_volume, fit_breathing, gate_open_volume, join_scans
from nanoscope_daq.recon.offline import reconstruct_file

RESULTS = Path(__file__).parent / "results"
JOINED = {"gate_open": "both tomograms joined, gate-open frames",
          "all_frames": "both joined, all frames, uncorrected",
          "breath_undone": "both joined, all frames, breath undone",
          "applied_axial": "  + the applied breath's axial part"}
"""The ``--motion`` rows: joined_volumes' volumes and their names in the table."""
MOTION_COMPARED = ("ground-truth labels", "ground-truth attenuation", "online gated, two averaged",
                   "online, two tomograms averaged")
"""The rows ``--motion`` shows beside its own."""


def voxel_count_mar(baseline: np.ndarray, followup: np.ndarray, voxel_um: float, days: float) -> tuple[float, float]:
    """MAR periosteal, endosteal (um/day) as mean local thickness of the formed voxels (unregistered)."""
    before, after = _solid(bone_tissue(baseline)), _solid(bone_tissue(followup))
    formed = _clusters(after & ~before, 5)
    thickness = local_thickness(formed, 0.25) * voxel_um
    envelope = compartments(before)[2]
    return tuple(float(thickness[formed & side].mean()) / days for side in (~envelope, envelope))


def volume_of(path: Path, name: str = "volume") -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5[name][()].astype(np.float32)


def beside(nxs: Path, suffix: str) -> Path:
    """The file written next to the NXtomo file ``nxs`` with its name and ``suffix``."""
    return nxs.with_name(nxs.stem + suffix)


def offline_volume(nxs: Path, settings: ReconConfig) -> np.ndarray:
    """``nanoscope recon``'s volume of ``nxs`` (automatic centre), reconstructed once and kept beside it."""
    path = beside(nxs, "_offline.h5")
    if not path.is_file():
        reconstruct_file(nxs, path, settings=settings)
    return volume_of(path)


def with_applied_axial(shifts_mm: np.ndarray, angles_deg: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Lab shifts (projections, 3) whose axial part is what the simulator's breath ``direction`` (specimen frame)
    adds to their in-plane part: the fitted breath completed by the part the fit does not find."""
    in_plane = float(np.hypot(direction[0], direction[1]))
    if in_plane == 0:
        raise ValueError("the breath's direction has no part across the beam to scale the axial part from")
    c, s = np.cos(np.radians(angles_deg)), np.sin(np.radians(angles_deg))
    specimen_x, specimen_y = c * shifts_mm[:, 0] + s * shifts_mm[:, 1], c * shifts_mm[:, 1] - s * shifts_mm[:, 0]
    along = (specimen_x * direction[0] + specimen_y * direction[1]) / in_plane
    return np.column_stack([shifts_mm[:, :2], along * direction[2] / in_plane])


def joined_volumes(files: list[Path], config: Config) -> tuple[dict[str, np.ndarray], dict]:
    """The session's tomograms ``files`` joined (recon/joined_scans.py) and reconstructed as the keys of ``JOINED``
    say, at the online volumes' centre of rotation; and the breath found. Kept beside the first file (the breath's
    fit takes minutes)."""
    path = beside(files[0], "_joined.h5")
    if not path.is_file():
        with h5py.File(beside(files[0], "_recon.h5"), "r") as h5:
            cor = float(h5["provenance"].attrs["cor_column"])
        settings, phantom = config.recon, config.sim.phantom
        scans = join_scans(files, cor, settings)
        spec = FilterSpec(settings.filter, settings.filter_cutoff, settings.pad_mode)
        shifts, breath = fit_breathing(scans, spec, settings, axial=False)
        applied = np.array([phantom.respiration_direction_x, phantom.respiration_direction_y,
                            phantom.respiration_direction_z])
        with h5py.File(path, "w") as h5:
            h5["gate_open"] = gate_open_volume(scans, spec)
            h5["all_frames"] = all_frames_volume(scans, spec)
            h5["breath_undone"] = all_frames_volume(scans, spec, shifts)
            h5["applied_axial"] = all_frames_volume(
                scans, spec, with_applied_axial(shifts, scans.geometry.angles_array, applied))
            h5.attrs["breath"] = json.dumps(breath)
    with h5py.File(path, "r") as h5:
        return {key: h5[key][()].astype(np.float32) for key in JOINED}, json.loads(h5.attrs["breath"])


def sessions(directory: Path) -> dict[float, list[Path]]:
    """NXtomo files of time series by study day."""
    found: dict[float, list[Path]] = {}
    for nxs in sorted(directory.rglob("time_series_*.nxs")):
        with h5py.File(nxs, "r") as h5:
            found.setdefault(float(h5["entry/sample/subject/day"][()]), []).append(nxs)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--first-day", type=float, default=0.0)
    parser.add_argument("--last-day", type=float, default=10.0)
    parser.add_argument("--motion", action="store_true",
                        help="the breathing's rows: each session's two tomograms joined, gate-open, all frames and "
                             "all frames with the breath undone, beside the ground truth and the online volumes")
    args = parser.parse_args()
    by_day = sessions(args.out)
    first, last = by_day[args.first_day], by_day[args.last_day]
    days = args.last_day - args.first_day
    data = first[0].parent
    truth = [data / f"ground_truth_day{d:g}_bin1.h5" for d in (args.first_day, args.last_day)]
    voxel_um = float(h5py.File(truth[0], "r")["labels"].attrs["voxel_size_um"])
    config = load_config(args.out / "demo.toml")
    settings = config.recon

    sources = {
        "ground-truth labels": lambda: None,
        "ground-truth attenuation": lambda: [volume_of(p, "attenuation") for p in truth],
        "offline auto COR, one tomogram": lambda: [offline_volume(s[0], settings) for s in (first, last)],
        "online, one tomogram": lambda: [volume_of(beside(s[0], "_recon.h5")) for s in (first, last)],
        "online gated, one tomogram": lambda: [volume_of(beside(s[0], "_gate_recon.h5")) for s in (first, last)],
        "online, two tomograms averaged": lambda: [np.mean([volume_of(beside(n, "_recon.h5")) for n in s], axis=0)
                                                   for s in (first, last)],
        "online gated, two averaged": lambda: [np.mean([volume_of(beside(n, "_gate_recon.h5")) for n in s], axis=0)
                                               for s in (first, last)],
    }
    breaths = {}
    if args.motion:
        sources = {name: sources[name] for name in MOTION_COMPARED}
        joined = [joined_volumes(s, config) for s in (first, last)]
        for day, (_, breath) in zip((args.first_day, args.last_day), joined, strict=True):
            breaths[day] = breath
            print(f"day {day:g}: breath found: peak {1000 * breath['peak_mm']:.1f} um at phase "
                  f"{breath['peak_phase']:.2f}, direction {np.round(breath['direction'], 3).tolist()}, "
                  f"fit {breath['seconds']} s", flush=True)
        for key, name in JOINED.items():
            sources[name] = lambda key=key: [volumes[key] for volumes, _ in joined]
    truth_labels = [volume_of(p, "labels").astype(np.uint8) for p in truth]
    rows = []
    print(f"{'source':44}{'method':22}{'MAR peri':>9}{'MAR endo':>9}{'BFR %/d':>9}{'MS/BS':>7}{'s':>6}")
    for name, load in sources.items():
        volumes = load()
        labels = truth_labels if volumes is None else [bone_labels(v) for v in volumes]
        peri, endo = voxel_count_mar(*labels, voxel_um, days)
        rows.append({"source": name, "method": "voxel counts", "mar_periosteal": peri, "mar_endosteal": endo})
        print(f"{name:44}{'voxel counts':22}{peri:9.3f}{endo:9.3f}", flush=True)
        for register in (False,) if args.motion else (False, True):
            if volumes is None and register:
                continue
            started = time.perf_counter()
            result = remodeling(*labels, voxel_um, days, register=register,
                                volumes=None if volumes is None else tuple(volumes))
            method = "sub-voxel" + (", registered" if register else "")
            rows.append({"source": name, "method": method, "mar_periosteal": result.mar_periosteal_um_per_day,
                         "mar_endosteal": result.mar_endosteal_um_per_day, "bfr_per_day": result.bfr_per_day,
                         "ms_bs": result.ms_bs, "seconds": time.perf_counter() - started})
            print(f"{name:44}{method:22}{result.mar_periosteal_um_per_day:9.3f}"
                  f"{result.mar_endosteal_um_per_day:9.3f}{100 * result.bfr_per_day:9.3f}{result.ms_bs:7.3f}"
                  f"{time.perf_counter() - started:6.1f}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    name = f"remodeling_accuracy_motion_day{args.first_day:g}-{args.last_day:g}.json" if args.motion \
        else "remodeling_accuracy.json"
    (RESULTS / name).write_text(json.dumps({"first_day": args.first_day, "last_day": args.last_day, "rows": rows,
                                            "breaths": {f"{d:g}": b for d, b in breaths.items()}}, indent=2)
                                if args.motion else json.dumps(rows, indent=2))
    print(f"wrote {RESULTS / name}")

if __name__ == "__main__":
    main()
