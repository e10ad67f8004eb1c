"""A tomogram analysed whole against in slabs: peak memory per voxel, tasks, halo overhead, wall time.

One simulated tomogram (nanoscope_daq/cohort.py, the test cohort's size, or ``--nxs``)
is analysed twice in this run, each in a fresh spawned process on the serial executor:
whole (``analyse_tomogram``), then in ``--slabs`` slabs (``[study] max_task_voxels``
forcing them, analysis/study/slab_tasks.py). For each: the peak resident memory above
the process's after its imports (ru_maxrss), per voxel of the volume, and the wall
time; for the slabs also the tasks, the reconstruction's and the thickness's halo
slices, the slices reconstructed against the volume's, and the measures against the
whole run's. The peak per voxel of the whole run is what chunks.PEAK_BYTES_PER_VOXEL
states.

Usage: python benchmarks/bench_chunks.py [--nxs FILE] [--slabs 3]
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
    parser.add_argument("--nxs", help="an NXtomo file (default: simulate one, 32 rows x 180 projections)")
    parser.add_argument("--slabs", type=int, default=3)
    args = parser.parse_args()
    from nanoscope_daq.analysis.study.batch import tomogram_shape
    from nanoscope_daq.analysis.study.sources import read_record
    from nanoscope_daq.cohort import CohortSpec, generate
    from nanoscope_daq.config import load_config

    with tempfile.TemporaryDirectory() as folder:
        nxs = args.nxs or str(generate(Path(folder) / "cohort", CohortSpec(1, (0.0,), rows=32, projections=180),
                                       load_config(), workers=1)[0])
        depth, rows, cols = tomogram_shape(read_record(Path(nxs)))
        voxels = depth * rows * cols
        cap = -(-depth // args.slabs) * rows * cols
        whole = in_fresh_process(nxs, f"{folder}/whole", 0)
        slabs = in_fresh_process(nxs, f"{folder}/slabs", cap)
    chunks = slabs["chunks"]
    count = len(chunks["slabs"])
    halo = chunks["reconstruction_halo_slices"]
    reconstructed = sum(min(depth, b + halo) - max(0, a - halo) for a, b in chunks["slabs"])
    report = {
        "shape": [depth, rows, cols], "slabs": chunks["slabs"], "tasks_slabs": chunks["tasks"], "tasks_whole": 1,
        "whole_seconds": whole["seconds"], "slabs_seconds": slabs["seconds"],
        "whole_stage_seconds": whole["stage_seconds"], "slabs_stage_seconds": slabs["stage_seconds"],
        "whole_peak_bytes_per_voxel": whole["peak_bytes"] / voxels,
        "slabs_peak_bytes_per_voxel": slabs["peak_bytes"] / voxels,
        "reconstruction_halo_slices": halo, "slices_reconstructed": reconstructed,
        "thickness_halo_slices": chunks["thickness_halo_slices"],
        "measures_equal": {k: abs(slabs["measures"][k] - v) <= 1e-6 * abs(v) for k, v in whole["measures"].items()},
    }
    print(f"volume {depth} x {rows} x {cols} = {voxels} voxels, {count} slabs of {chunks['slabs']}")
    print(f"whole:  1 task,  {whole['seconds']:.1f} s, peak {report['whole_peak_bytes_per_voxel']:.0f} B/voxel "
          f"(stages {whole['stage_seconds']})")
    print(f"slabs: {chunks['tasks']} tasks, {slabs['seconds']:.1f} s, peak {report['slabs_peak_bytes_per_voxel']:.0f}"
          f" B/voxel in one process running every slab (stages {slabs['stage_seconds']})")
    print(f"halo: reconstruction +-{halo} slices ({reconstructed} slices reconstructed for {depth}), thickness "
          f"+-{chunks['thickness_halo_slices']} slices; measures equal to 1e-6: {report['measures_equal']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
