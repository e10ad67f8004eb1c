"""A tomogram analysed whole against in slabs: peak memory per voxel, tasks, halo overhead, wall time.

Simulated tomograms of the test cohort's mice (nanoscope_daq/cohort.py, 180 cone-beam
projections, 144 columns) with ``--rows`` detector rows each (32 and 64: volumes of
32 and 64 x 144 x 144 voxels), each run in a fresh spawned process on the serial
executor: the largest whole (``analyse_tomogram``) and in ``--slabs`` slabs (``[study]
max_task_voxels`` forcing them, analysis/study/slab_tasks.py), the others whole. For
each: the peak resident memory above the process's after its imports (ru_maxrss) and
the wall time. The peak per voxel is the slope of the whole runs' peaks over their
voxels (what a voxel more costs; the fixed cost of torch's and the axis search's buffers
is its intercept): what chunks.PEAK_BYTES_PER_VOXEL states. For the slabs also the
tasks, the reconstruction's and the thickness's halo slices, the slices reconstructed
against the volume's, and the measures against the whole run's.

Usage: python benchmarks/bench_chunks.py [--rows 32 64] [--slabs 4]
Writes benchmarks/results/bench_chunks.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "bench_chunks.json"


def measured_run(nxs: str, out: str, max_task_voxels: int) -> dict[str, Any]:
    """In a fresh process: analyse ``nxs`` (in slabs when ``max_task_voxels`` > 0); peak memory and wall time."""
    import torch

    from nanoscope_daq.analysis.study.batch import SerialExecutor, run_batch
    from nanoscope_daq.analysis.study.sources import read_record
    from nanoscope_daq.analysis.study.tasks import Layout, StudySettings, analyse_tomogram
    from nanoscope_daq.config import load_config

    torch.set_num_threads(1)
    record, layout, settings = read_record(Path(nxs)), Layout(Path(out)), StudySettings.from_config(load_config())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if max_task_voxels:
        batch = run_batch(SerialExecutor(), [record], layout, settings, progress=False,
                          max_task_voxels=max_task_voxels)
        if batch.count("failed"):
            raise RuntimeError(batch.summary())
        result = batch.tomograms[record.key]
    else:
        result = analyse_tomogram(record, layout, settings)
    return {"seconds": time.perf_counter() - start,
            "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before,
            "measures": result["measures"], "chunks": result.get("chunks"),
            "stage_seconds": result["provenance"]["seconds"]}


def in_fresh_process(*args: Any) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measured_run, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--slabs", type=int, default=4)
    args = parser.parse_args()
    from nanoscope_daq.analysis.study.batch import tomogram_shape
    from nanoscope_daq.analysis.study.sources import read_record
    from nanoscope_daq.cohort import CohortSpec, generate
    from nanoscope_daq.config import load_config

    whole, shapes = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for rows in sorted(args.rows):
            nxs = str(generate(Path(folder) / f"rows{rows}", CohortSpec(1, (0.0,), rows=rows, projections=180),
                               load_config(), workers=1)[0])
            shapes[rows] = tomogram_shape(read_record(Path(nxs)))
            whole[rows] = in_fresh_process(nxs, f"{folder}/whole{rows}", 0)
        depth, rows, cols = shapes[max(args.rows)]
        slabs = in_fresh_process(nxs, f"{folder}/slabs", -(-depth // args.slabs) * rows * cols)
    voxels = {r: int(np.prod(shape)) for r, shape in shapes.items()}
    small, large = min(args.rows), max(args.rows)
    slope = (whole[large]["peak_bytes"] - whole[small]["peak_bytes"]) / (voxels[large] - voxels[small])
    chunks = slabs["chunks"]
    halo = chunks["reconstruction_halo_slices"]
    reconstructed = sum(min(depth, b + halo) - max(0, a - halo) for a, b in chunks["slabs"])
    report = {
        "shapes": shapes, "peak_bytes_whole": {r: w["peak_bytes"] for r, w in whole.items()},
        "seconds_whole": {r: w["seconds"] for r, w in whole.items()},
        "stage_seconds_whole": {r: w["stage_seconds"] for r, w in whole.items()},
        "peak_bytes_per_voxel": slope, "fixed_peak_bytes": whole[small]["peak_bytes"] - slope * voxels[small],
        "slabs": chunks["slabs"], "tasks_slabs": chunks["tasks"], "peak_bytes_slabs": slabs["peak_bytes"],
        "seconds_slabs": slabs["seconds"], "stage_seconds_slabs": slabs["stage_seconds"],
        "reconstruction_halo_slices": halo, "slices_reconstructed": reconstructed,
        "thickness_halo_slices": chunks["thickness_halo_slices"], "lacunae_box_voxels": chunks["lacunae_box_voxels"],
        "measures_relative_difference": {k: abs(slabs["measures"][k] - v) / abs(v) if v else abs(slabs["measures"][k])
                                         for k, v in whole[large]["measures"].items()},
    }
    for r in sorted(whole):
        print(f"whole {shapes[r]}: 1 task, {whole[r]['seconds']:.1f} s, peak {whole[r]['peak_bytes'] / 2**20:.0f} MiB "
              f"(stages {whole[r]['stage_seconds']})")
    print(f"peak per voxel (slope): {slope:.0f} B; fixed: {report['fixed_peak_bytes'] / 2**20:.0f} MiB")
    print(f"slabs {chunks['slabs']}: {chunks['tasks']} tasks, {slabs['seconds']:.1f} s, peak "
          f"{slabs['peak_bytes'] / 2**20:.0f} MiB in one process running every slab (stages {slabs['stage_seconds']})")
    print(f"halo: reconstruction +-{halo} slices ({reconstructed} slices reconstructed for {depth}), thickness "
          f"+-{chunks['thickness_halo_slices']} slices, lacunae box {chunks['lacunae_box_voxels']} voxels; "
          f"measures' relative difference from the whole run: "
          f"{ {k: float(f'{v:.1e}') for k, v in report['measures_relative_difference'].items()} }")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
