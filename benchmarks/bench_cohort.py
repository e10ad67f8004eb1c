"""Study-scale analysis on dask.distributed: throughput, per-stage cost, scheduler overhead, and a projection.

1. A simulated cohort (nanoscope_daq/cohort.py; default 1 mouse per group x 3 days, or
   ``--cohort DIR``) is analysed twice in this run, on a LocalCluster of 1 and of 2
   single-threaded worker processes on loopback, each into a fresh output folder:
   tomograms per minute of the whole batch (tomogram tasks and interval tasks).
2. The per-task cost of each stage, from the results' provenance (1-worker run).
3. The scheduler's overhead per task: no-op tasks submitted and gathered, per task.
4. The cohort table of the 1-worker run against the truth the simulator applied
   (``cohort_truth.json``): per cohort and time point, measured mean +- sd against the
   applied mean +- sd, and the between-cohort difference.
5. A projection, on paper, of 100 mice x 10 sessions of 2048^3 tomograms on N GPU
   workers from the measured costs (assumptions printed with it).

Usage: python benchmarks/bench_cohort.py [--cohort DIR] [--mice-per-group 1] [--noops 400]
Writes benchmarks/results/bench_cohort.json. With ``--cohort DIR --table DIR/study/cohort_table.json`` it
runs nothing and prints part 4 only, for a cohort ``nanoscope analyze`` has analysed, as a Markdown table;
with ``--cohort DIR --intervals OUT`` it first redoes only the intervals (registration and remodelling, two
processes) from the tomogram results ``nanoscope analyze`` left next to the inputs, into OUT, and prints part 4
of them (the tomogram measures as they were, but the grey-value porosity measured again from the stored volumes
and labels).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py

from nanoscope_daq.analysis.study.batch import DaskExecutor, consecutive_pairs, run_batch
from nanoscope_daq.analysis.study.cluster import study_client
from nanoscope_daq.analysis.study.cohort_table import observations, summarise
from nanoscope_daq.analysis.study.sources import NXtomoFiles, Selection
from nanoscope_daq.analysis.study.tasks import Layout, StudySettings, analyse_interval, grey_porosity
from nanoscope_daq.cohort import CohortSpec, generate
from nanoscope_daq.config import load_config
from nanoscope_daq.volume_files import read_labels, read_volume

RESULTS = Path(__file__).parent / "results" / "bench_cohort.json"

# Projection assumptions (stated, not measured here: no GPU on this machine).
PAPER_MICE, PAPER_SESSIONS, PAPER_SIZE = 100, 10, 2048
PAPER_PROJECTIONS = 3200
"""Projections of a 2048^3 cone-beam tomogram (about pi/2 x 2048)."""
GPU_VOXEL_UPDATES_PER_S = 1.0e11
"""FDK back-projection rate of one data-centre GPU (voxel x projection updates per second): the order of
published CUDA back-projectors (ASTRA, TIGRE) on current cards. An assumption to replace by a measurement."""
CPU_CORES_PER_WORKER = 16
"""CPU cores beside each GPU for the CPU stages (segmentation, morphometry, registration), chunked across them."""


def noop(index: int) -> int:
    return index


def scheduler_overhead(host: str, workers: int, tasks: int) -> float:
    """Seconds per no-op task, submitted one by one and gathered, on a fresh LocalCluster."""
    with study_client(None, workers, host, 3) as client:
        client.gather(client.map(noop, range(20), pure=False))  # warm-up
        start = time.perf_counter()
        client.gather([client.submit(noop, i, pure=False) for i in range(tasks)])
        return (time.perf_counter() - start) / tasks


def analyse(records, out: Path, workers: int, host: str, settings: StudySettings) -> dict:
    started = time.perf_counter()
    with study_client(None, workers, host, 3) as client:
        ready = time.perf_counter()
        batch = run_batch(DaskExecutor(client), records, Layout(out), settings, progress=False)
        wall = time.perf_counter() - ready
    assert batch.count("failed") == 0, batch.summary()
    return {"workers": workers, "cluster_start_s": ready - started, "batch_s": wall,
            "tomograms": len(batch.tomograms), "intervals": len(batch.intervals),
            "tomograms_per_minute": 60 * len(batch.tomograms) / wall, "batch": batch}


TRUTH_KEYS = {"porosity": ("days", "porosity"), "cortical_porosity": ("days", "porosity"),
              "bfr_per_day": ("intervals", "bfr_per_day"), "brr_per_day": ("intervals", "brr_per_day"),
              "mar_periosteal_um_per_day": ("intervals", "mar_periosteal_um_per_day"),
              "mar_endosteal_um_per_day": ("intervals", "mar_endosteal_um_per_day")}
"""Measures whose truth cohort_truth.json holds: where (per day or per interval) and under which key (both
porosities, the pores the segmentation resolved and the grey values', against the box's true porosity)."""


def truth_table(folder: Path, summary: dict) -> list[dict]:
    """Measured (``summary``: cohort_table.summarise) against applied, per measure, time point and cohort, and
    each cohort's difference from the reference cohort."""
    truth = json.loads((folder / "cohort_truth.json").read_text())
    applied: dict[tuple, list[float]] = {}
    for mouse in truth["mice"]:
        for measure, (where, key) in TRUTH_KEYS.items():
            for item in mouse[where]:
                point = f"{item['day']:g}" if where == "days" else f"{item['from_day']:g}-{item['to_day']:g}"
                applied.setdefault((measure, point, mouse["cohort"]), []).append(item[key])
    reference = summary["reference"]
    measured = {(r["measure"], r["time_point"], r["cohort"]): r for r in summary["table"]}
    compared = {(c["measure"], c["time_point"], c["cohort"]): c for c in summary["comparisons"]}
    out = []
    for (measure, point, cohort), values in sorted(applied.items()):
        if (measure, point, cohort) not in measured:
            continue
        m = measured[(measure, point, cohort)]
        row = {"measure": measure, "time_point": point, "cohort": cohort, "n": m["n"], "measured_mean": m["mean"],
               "measured_sd": m["sd"], "applied_mean": statistics.mean(values),
               "applied_sd": statistics.stdev(values) if len(values) > 1 else 0.0}
        comparison = compared.get((measure, point, cohort))
        if comparison:
            base = statistics.mean(applied[(measure, point, reference)])
            row.update(measured_difference=comparison["difference"], applied_difference=row["applied_mean"] - base,
                       hedges_g=comparison["hedges_g"], welch_p=comparison["welch_p"],
                       mann_whitney_p=comparison["mann_whitney_p"])
        out.append(row)
    return out


def format_truth_table(rows: list[dict]) -> str:
    """The truth comparison as a fixed-width text table."""
    lines = [f"{'measure':28}{'time':>6}{'cohort':>7}{'n':>3}{'measured':>22}{'applied':>22}{'diff meas':>11}"
             f"{'diff appl':>11}{'g':>7}{'p Welch':>9}"]
    for r in rows:
        line = (f"{r['measure']:28}{r['time_point']:>6}{r['cohort']:>7}{r['n']:>3}"
                f"{r['measured_mean']:>12.4g} +- {r['measured_sd']:<7.2g}{r['applied_mean']:>12.4g} +- "
                f"{r['applied_sd']:<7.2g}")
        if "measured_difference" in r:
            line += (f"{r['measured_difference']:>11.3g}{r['applied_difference']:>11.3g}{r['hedges_g']:>7.2f}"
                     f"{r['welch_p']:>9.2g}")
        lines.append(line)
    return "\n".join(lines)


MARKDOWN_MEASURES = {"bfr_per_day": ("BFR (1/day)", 4), "brr_per_day": ("BRR (1/day)", 5),
                     "mar_periosteal_um_per_day": ("MAR periosteal (um/day)", 2),
                     "mar_endosteal_um_per_day": ("MAR endosteal (um/day)", 2),
                     "porosity": ("porosity (pores resolved)", 4),
                     "cortical_porosity": ("cortical porosity (grey values)", 4)}
"""Rows of the Markdown table, in order: label and decimals."""


def markdown_truth_table(rows: list[dict], reference: str) -> str:
    """The truth comparison of two cohorts (``reference`` and one other) as docs/benchmarks.md shows it."""
    cohorts = {(r["measure"], r["time_point"], r["cohort"]): r for r in rows}
    other = next(r["cohort"] for r in rows if r["cohort"] != reference)
    lines = [f"| measure | interval / day | {reference} measured | {reference} applied | {other} measured | "
             f"{other} applied | diff measured | diff applied | g | p |", "|---" * 10 + "|"]
    for measure, (label, digits) in MARKDOWN_MEASURES.items():
        compared = [r for r in rows if r["measure"] == measure and "measured_difference" in r]
        for r in sorted(compared, key=lambda r: float(r["time_point"].split("-")[0])):
            base = cohorts[(measure, r["time_point"], reference)]
            point = r["time_point"] if "-" in r["time_point"] else f"day {r['time_point']}"
            cells = [f"{x['measured_mean']:.{digits}f} +- {x['measured_sd']:.{digits}f} | "
                     f"{x['applied_mean']:.{digits}f} +- {x['applied_sd']:.{digits}f}" for x in (base, r)]
            lines.append(f"| {label} | {point} | {cells[0]} | {cells[1]} | {r['measured_difference']:+.{digits}f} | "
                         f"{r['applied_difference']:+.{digits}f} | {r['hedges_g']:.1f} | {r['welch_p']:.1g} |")
    return "\n".join(lines)


def remeasured(result: dict) -> dict:
    """A stored tomogram result with its grey-value porosity measured again from its stored volume and labels."""
    volume, labels = read_volume(result["outputs"]["volume"]).data, read_labels(result["outputs"]["labels"]).data
    return {**result, "measures": {**result["measures"], "cortical_porosity": grey_porosity(volume, labels)}}


def redo_intervals(folder: Path, out: Path, settings: StudySettings, reference: str) -> dict:
    """Every interval of the analysed cohort under ``folder`` recomputed from its stored tomogram results into
    ``out`` (and each tomogram's grey-value porosity from its stored volume and labels: no reconstruction); the
    cohort table (cohort_table.summarise) of those tomograms and the new intervals, also written to
    ``out``/cohort_table.json."""
    records = NXtomoFiles([folder]).tomograms(Selection())
    stored = {record.path: remeasured(json.loads(Layout().tomogram(record, "analysis.json").read_text()))
              for record in records}
    pairs = consecutive_pairs(records)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        intervals = list(pool.map(analyse_interval, [stored[a.path] for a, _ in pairs],
                                  [stored[b.path] for _, b in pairs], [Layout(out)] * len(pairs),
                                  [settings] * len(pairs), [True] * len(pairs)))
    summary = summarise(observations(stored.values(), intervals), reference)
    (out / "cohort_table.json").write_text(json.dumps(summary, indent=2))
    return summary


def stage_costs(batch) -> dict[str, dict[str, float]]:
    costs: dict[str, list[float]] = {}
    for result in list(batch.tomograms.values()) + list(batch.intervals.values()):
        for stage, seconds in result["provenance"]["seconds"].items():
            costs.setdefault(stage, []).append(seconds)
    return {stage: {"mean_s": statistics.mean(v), "sd_s": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
            for stage, v in costs.items()}


def projection(costs: dict, shape: tuple[int, int, int], projections: int, overhead_s: float) -> dict:
    """Hours for the paper cohort on N GPU workers; CPU stages scale with voxels, FDK with voxels x projections."""
    voxels = shape[0] * shape[1] * shape[2]
    scale = PAPER_SIZE**3 / voxels
    tomograms = PAPER_MICE * PAPER_SESSIONS
    intervals = PAPER_MICE * (PAPER_SESSIONS - 1)
    recon_gpu_s = PAPER_SIZE**3 * PAPER_PROJECTIONS / GPU_VOXEL_UPDATES_PER_S
    recon_cpu_1core_s = costs["reconstruction"]["mean_s"] * scale * PAPER_PROJECTIONS / projections
    per_tomogram_cpu_s = (costs["segmentation"]["mean_s"] + costs["morphometry"]["mean_s"]) * scale
    per_interval_cpu_s = costs["registration_and_remodeling"]["mean_s"] * scale
    worker_s = (tomograms * (recon_gpu_s + per_tomogram_cpu_s / CPU_CORES_PER_WORKER)
                + intervals * per_interval_cpu_s / CPU_CORES_PER_WORKER + (tomograms + intervals) * overhead_s)
    return {
        "tomograms": tomograms, "intervals": intervals, "voxel_scale": scale,
        "per_tomogram": {"fdk_gpu_s": recon_gpu_s, "fdk_one_cpu_core_s": recon_cpu_1core_s,
                         "segmentation_and_morphometry_one_core_s": per_tomogram_cpu_s},
        "per_interval_registration_one_core_s": per_interval_cpu_s,
        "hours_on_n_gpu_workers": {n: worker_s / n / 3600 for n in (1, 4, 16, 64)},
        "assumptions": {"gpu_voxel_updates_per_s": GPU_VOXEL_UPDATES_PER_S, "projections": PAPER_PROJECTIONS,
                        "cpu_cores_per_worker": CPU_CORES_PER_WORKER,
                        "cpu_stages": "linear in voxels, split in chunks over the worker's cores without loss",
                        "workers": "perfect scaling: tasks are independent, the scheduler's overhead is measured"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", help="an existing cohort folder (default: generate one)")
    parser.add_argument("--mice-per-group", type=int, default=1)
    parser.add_argument("--noops", type=int, default=400)
    parser.add_argument("--reference", default="sham", help="cohort the others are compared with")
    parser.add_argument("--table", help="cohort_table.json of the analysed --cohort: print it against the truth, "
                                        "run nothing")
    parser.add_argument("--intervals", metavar="OUT", help="redo the analysed --cohort's intervals into OUT and "
                                                            "print them against the truth")
    args = parser.parse_args()
    if args.table or args.intervals:
        if not args.cohort:
            parser.error("--table and --intervals need --cohort (the folder holding cohort_truth.json)")
        summary = (json.loads(Path(args.table).read_text()) if args.table else
                   redo_intervals(Path(args.cohort), Path(args.intervals), StudySettings.from_config(load_config()),
                                  args.reference))
        rows = truth_table(Path(args.cohort), summary)
        print(format_truth_table(rows))
        print(markdown_truth_table(rows, args.reference))
        return
    config = load_config()
    host, settings = config.study.scheduler_host, StudySettings.from_config(config)
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as scratch:
        folder = Path(args.cohort) if args.cohort else Path(scratch) / "cohort"
        spec = CohortSpec(mice_per_group=args.mice_per_group)
        generated_s = None
        if not args.cohort:
            start = time.perf_counter()
            generate(folder, spec, config, workers=2)
            generated_s = time.perf_counter() - start
        records = NXtomoFiles([folder]).tomograms(Selection())
        runs = [analyse(records, Path(scratch) / f"out-{n}", n, host, settings) for n in (1, 2)]
        costs = stage_costs(runs[0]["batch"])
        batch = runs[0]["batch"]
        recovered = truth_table(folder, summarise(observations(batch.tomograms.values(), batch.intervals.values()),
                                                  args.reference))
        first = next(iter(runs[0]["batch"].tomograms.values()))
        with h5py.File(first["outputs"]["volume"], "r") as h5:
            volume_shape = tuple(int(n) for n in h5["volume"].shape)
        projections = json.loads((folder / "cohort_truth.json").read_text())["spec"]["projections"]
        overhead = {n: scheduler_overhead(host, n, args.noops) for n in (1, 2)}
    report = {
        "machine": platform.platform(), "python": platform.python_version(),
        "cohort": {"tomograms": len(records), "generated_s": generated_s, "volume_shape": volume_shape,
                   "projections": projections},
        "throughput": [{k: v for k, v in run.items() if k != "batch"} for run in runs],
        "stage_cost_s": costs, "against_truth": recovered, "scheduler_overhead_s_per_task": overhead,
        "projection": projection(costs, volume_shape, projections, overhead[1]),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "against_truth"}, indent=2))
    print(format_truth_table(recovered))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
