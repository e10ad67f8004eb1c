"""What limits the demo's remodelling rates: the same analysis on every kind of volume of one demo run.

Run on the output of ``nanoscope demo --out D`` (its NXtomo files, offline and online
volumes and the simulator's ground truth of each day)::

    PYTHONPATH=. python benchmarks/bench_remodeling_accuracy.py D [--first-day 0 --last-day 10]

For each source of the two time points' volumes (ground-truth labels; the ground-truth
attenuation, noise- and blur-free; the offline reconstruction of one tomogram with the
automatic centre of rotation, the demo's path before issue 16, made here from the NXtomo
file; the online reconstruction of one tomogram, whole and gated, with the instrument's
centre; both tomograms of the session averaged) it prints MAR periosteal / endosteal, BFR
and MS/BS two ways: voxel counts (mean local thickness of the formed voxels, the method
before issue 16) and sub-voxel (formed volume over surface, analysis/apposition.py), with
and without registration. Writes the table as JSON under benchmarks/results/.
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
from nanoscope_daq.config import load_config
from nanoscope_daq.recon.offline import reconstruct_file

RESULTS = Path(__file__).parent / "results"


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
    args = parser.parse_args()
    by_day = sessions(args.out)
    first, last = by_day[args.first_day], by_day[args.last_day]
    days = args.last_day - args.first_day
    data = first[0].parent
    truth = [data / f"ground_truth_day{d:g}_bin1.h5" for d in (args.first_day, args.last_day)]
    voxel_um = float(h5py.File(truth[0], "r")["labels"].attrs["voxel_size_um"])

    def stem(nxs: Path, suffix: str) -> Path:
        return nxs.with_name(nxs.stem + suffix)

    settings = load_config(args.out / "demo.toml").recon
    for nxs in (first[0], last[0]):
        if not stem(nxs, "_offline.h5").is_file():
            reconstruct_file(nxs, stem(nxs, "_offline.h5"), settings=settings)

    sources = {
        "ground-truth labels": None,
        "ground-truth attenuation": [volume_of(p, "attenuation") for p in truth],
        "offline auto COR, one tomogram": [volume_of(stem(s[0], "_offline.h5")) for s in (first, last)],
        "online, one tomogram": [volume_of(stem(s[0], "_recon.h5")) for s in (first, last)],
        "online gated, one tomogram": [volume_of(stem(s[0], "_gate_recon.h5")) for s in (first, last)],
        "online, two tomograms averaged": [np.mean([volume_of(stem(n, "_recon.h5")) for n in s], axis=0)
                                           for s in (first, last)],
        "online gated, two averaged": [np.mean([volume_of(stem(n, "_gate_recon.h5")) for n in s], axis=0)
                                       for s in (first, last)],
    }
    truth_labels = [volume_of(p, "labels").astype(np.uint8) for p in truth]
    rows = []
    print(f"{'source':32}{'method':22}{'MAR peri':>9}{'MAR endo':>9}{'BFR %/d':>9}{'MS/BS':>7}{'s':>6}")
    for name, volumes in sources.items():
        labels = truth_labels if volumes is None else [bone_labels(v) for v in volumes]
        started = time.perf_counter()
        peri, endo = voxel_count_mar(*labels, voxel_um, days)
        rows.append({"source": name, "method": "voxel counts", "mar_periosteal": peri, "mar_endosteal": endo})
        print(f"{name:32}{'voxel counts':22}{peri:9.3f}{endo:9.3f}", flush=True)
        for register in (False, True):
            if volumes is None and register:
                continue
            started = time.perf_counter()
            result = remodeling(*labels, voxel_um, days, register=register,
                                volumes=None if volumes is None else tuple(volumes))
            method = "sub-voxel" + (", registered" if register else "")
            rows.append({"source": name, "method": method, "mar_periosteal": result.mar_periosteal_um_per_day,
                         "mar_endosteal": result.mar_endosteal_um_per_day, "bfr_per_day": result.bfr_per_day,
                         "ms_bs": result.ms_bs, "seconds": time.perf_counter() - started})
            print(f"{name:32}{method:22}{result.mar_periosteal_um_per_day:9.3f}"
                  f"{result.mar_endosteal_um_per_day:9.3f}{100 * result.bfr_per_day:9.3f}{result.ms_bs:7.3f}"
                  f"{time.perf_counter() - started:6.1f}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "remodeling_accuracy.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
