"""The demo's analysis side: each session segmented and measured, remodelling between sessions, all against
the simulator's ground truth and what it applied; the results in the catalog, the report and the summary.

A session's volume is the mean of its tomograms' online reconstructions (analysis/longitudinal.py).
Ground truth: the simulator's ``ground_truth_day<d>_bin1.h5`` of each day (labels at the
scan's voxel size, exact volumes, the remodelling applied). Each analysis is an analysis
run in the catalog, linked to its raw run by ``raw_run_uid``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..analysis.labels import Code
from ..analysis.longitudinal import Session, remodeling_between, session_from_volumes
from ..analysis.metrics import precision
from ..analysis.morphometry import Morphometry, MorphometrySettings, morphometry
from ..analysis.remodeling import Remodeling, change_map, remodeling
from ..config import Config
from ..pipeline.analysis_run import AnalysisRun
from ..plans.dose import DoseLedger
from ..report import figures
from ..report.page import Figure, Table, text_table, write_report
from ..sim.ioc.camera.ground_truth import ground_truth_name
from ..volume_files import read_provenance, write_labels, write_volume
from .acquisition import LOADING, MOUSE, SERIES, Acquisition

MORPHOMETRY_ROWS = [("BV/TV", "bv_tv", 1.0, "{:.3f}"), ("Ct.Th (um)", "ct_th_um", 1.0, "{:.1f}"),
                    ("lacunar porosity (%)", "porosity", 100.0, "{:.2f}"),
                    ("lacuna density (1/mm^3)", "lacuna_density_per_mm3", 1.0, "{:.0f}")]


@dataclass(frozen=True)
class TimePoint:
    """One session: the scans' analysis and the ground truth of its day."""

    day: float
    raw_start: dict
    session: Session
    measured: Morphometry
    truth_labels: np.ndarray
    truth: Morphometry
    applied: dict
    """The simulator's remodelling record (day 0 to this day) and its whole-bone volumes."""


@dataclass(frozen=True)
class Interval:
    """Remodelling between two sessions: from the scans, from the ground-truth labels, and applied."""

    first: TimePoint
    last: TimePoint
    measured: Remodeling
    truth: Remodeling
    applied: dict[str, float]


def _morphometry_values(result: Morphometry) -> dict[str, float]:
    return {"bv_tv": result.bv_tv, "ct_th_um": result.ct_th_um, "porosity": result.porosity,
            "lacuna_density_per_mm3": result.lacunae.density_per_mm3}


def _truth_file(data_dir: Path, day: float) -> Path:
    return next(data_dir.rglob(ground_truth_name(day, SERIES["binning"])))


def time_point(acquisition: Acquisition, day: float, settings: MorphometrySettings, out: Path) -> TimePoint:
    """The session of ``day`` from its online volumes (all frames), segmented and measured, and its ground truth."""
    start = acquisition.session_start(day)
    paths = []
    for path in acquisition.online_volumes:
        with h5py.File(path, "r") as h5:
            provenance = read_provenance(h5)
        if provenance.get("raw_run_uid") == start["uid"] and provenance.get("selection") == "all":
            paths.append(path)
    session = session_from_volumes(day, sorted(paths))
    write_volume(out / f"day{day:g}_volume.h5", session.volume)
    write_labels(out / f"day{day:g}_labels.h5", session.labels)
    with h5py.File(_truth_file(acquisition.config.paths.data_path, day), "r") as h5:
        labels = h5["labels"][()]
        voxel_um = float(h5["labels"].attrs["voxel_size_um"])
        whole_bone = {f"whole_{k}": v for k, v in h5["volumes/whole_bone"].attrs.items()}
        applied = {**dict(h5["remodeling"].attrs), **whole_bone}
    return TimePoint(day, start, session, morphometry(session.labels.data, session.labels.voxel_size_um, settings),
                     labels, morphometry(labels, voxel_um, settings), applied)


def interval(first: TimePoint, last: TimePoint, min_cluster_voxels: int) -> Interval:
    """Remodelling from ``first`` to ``last``: scans (registered), ground-truth labels, and what was applied."""
    days = last.day - first.day
    measured = remodeling_between(first.session, last.session)
    truth = remodeling(first.truth_labels, last.truth_labels, first.session.labels.voxel_size_um, days,
                       register=False, min_cluster_voxels=min_cluster_voxels)
    formed = float(last.applied["formed_mm3"]) - float(first.applied["formed_mm3"])
    applied = {"bfr_per_day": formed / float(first.applied["whole_bone_tissue_mm3"]) / days,
               "mar_periosteal_um_per_day": float(last.applied["periosteal_mar_um_per_day"]),
               "mar_endosteal_um_per_day": float(last.applied["endosteal_mar_um_per_day"]), "ms_bs": 1.0}
    return Interval(first, last, measured, truth, applied)


def publish(publish_doc, points: Sequence[TimePoint], intervals: Sequence[Interval]) -> list[str]:
    """Each session's morphometry and each interval's remodelling as analysis runs linked to their raw runs."""
    uids = []
    for point in points:
        run = AnalysisRun(publish_doc, point.raw_start, "morphometry",
                          {"method": point.session.labels.provenance["method"]})
        run.event("results", {k: float(v) for k, v in _morphometry_values(point.measured).items()})
        run.stop()
        uids.append(run.uid)
    for change in intervals:
        run = AnalysisRun(publish_doc, change.last.raw_start, "remodeling",
                          {"baseline_run_uid": change.first.raw_start["uid"], "baseline_day": change.first.day})
        run.event("results", {k: float(v) for k, v in change.measured.to_dict().items()
                              if isinstance(v, (int, float))})
        run.stop()
        uids.append(run.uid)
    return uids


def pore_precision(point: TimePoint) -> float:
    """Share of the scans' pore voxels that lie on a ground-truth pore: a segmentation of noise scores about the
    porosity itself (benchmarks/bench_lacuna_visibility.py)."""
    return precision(point.session.labels.data == Code.LCN, point.truth_labels == Code.LCN)


def morphometry_table(points: Sequence[TimePoint]) -> Table:
    header = ["", *[f"day {p.day:g} {kind}" for p in points for kind in ("scans", "truth")]]
    rows = [header]
    for name, key, scale, fmt in MORPHOMETRY_ROWS:
        cells = [name]
        for p in points:
            cells += [fmt.format(scale * _morphometry_values(m)[key]) for m in (p.measured, p.truth)]
        rows.append(cells)
    rows.append(["pore voxels on a true pore (%)", *[cell for p in points for cell in
                                                        (f"{100 * pore_precision(p):.1f}", "100")]])
    return Table("Morphometry per session (scans: the session's mean volume, segmented; truth: the simulator's labels "
                 "at the same voxel size)", rows,
                 "the lacunae (5-6 um across) are blurred to a third of their contrast (a Gaussian of 1.4 voxels: "
                 "1.0 at rest, the rest breathing) and the noise is twice that: most pores found are noise, as their "
                 "share on true pores shows (docs/demo.md)")


REMODELLING_ROWS = [("BFR (%/day)", "bfr_per_day", 100.0), ("BRR (%/day)", "brr_per_day", 100.0),
                    ("MAR periosteal (um/day)", "mar_periosteal_um_per_day", 1.0),
                    ("MAR endosteal (um/day)", "mar_endosteal_um_per_day", 1.0), ("MS/BS", "ms_bs", 1.0),
                    ("ES/BS", "es_bs", 1.0)]


def remodelling_table(change: Interval) -> Table:
    rows = [["", "from the scans", "ground truth", "applied", "scans / applied"]]
    for name, key, scale in REMODELLING_ROWS:
        scans, truth = getattr(change.measured, key) * scale, getattr(change.truth, key) * scale
        applied = change.applied.get(key)
        reference = applied * scale if applied is not None else None
        rows.append([name, f"{scans:.3f}", f"{truth:.3f}", "" if reference is None else f"{reference:.3f}",
                     "" if not reference else f"{scans / reference:.3f}"])
    return Table(f"Remodelling from day {change.first.day:g} to day {change.last.day:g}", rows,
                 "applied BFR: the simulator's formed volume over its whole bone; ground truth: the same analysis "
                 "of its labels; applied MS/BS: every surface forms")


def loading_table(acquisition: Acquisition, config: Config) -> Table:
    extension, force = acquisition.force_extension()
    elastic = (force > 0.5) & (force < 0.8 * config.sim.specimen.yield_force_n)
    slope = float(np.polyfit(extension[elastic], force[elastic], 1)[0]) if elastic.sum() > 2 else float("nan")
    rows = [["", "measured", "applied / set"]]
    for number, (ext, measured, commanded) in enumerate(acquisition.holds(), start=1):
        rows.append([f"hold {number}: force (N)", f"{measured:.2f}", f"{commanded:g}"])
        rows.append([f"hold {number}: extension (um)", f"{1e3 * ext:.2f}", ""])
    rows.append(["stiffness (N/mm, fit below 80 % of yield)", f"{slope:.1f}",
                 f"{config.sim.specimen.stiffness_n_per_mm:g}"])
    return Table("In-situ loading (step, hold, scan)", rows)


def respiration(acquisition: Acquisition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time (s), respiratory phase and gate of the first session's projection frames (the camera file's attributes)."""
    start = acquisition.session_start(acquisition.days[0])
    camera = next(p for p in acquisition.config.paths.data_path.rglob(f"time_series_{start['uid'][:8]}_*.h5")
                  if p.stem.count("_") == 3)
    with h5py.File(camera, "r") as h5:
        attributes = h5["entry/instrument/NDAttributes"]
        kind, clock = attributes["FrameType"][()], attributes["SimTime"][()]
        phase, gate = attributes["RespiratoryPhase"][()], attributes["Gate"][()]
    projections = kind == 0
    return clock[projections] - clock[projections][0], phase[projections], gate[projections]


def respiration_table(gate: np.ndarray, time_s: np.ndarray, phase: np.ndarray, config: Config) -> Table:
    cycles = np.count_nonzero(np.diff(phase) < -0.5)
    rate = 60.0 * cycles / (time_s[-1] - time_s[0]) if len(time_s) > 1 else float("nan")
    physiology = config.sim.physiology
    return Table("Respiration during the first session", [
        ["", "measured", "applied"],
        ["frames with the gate open (%)", f"{100 * np.mean(gate > 0.5):.1f}", f"{100 * physiology.gate_fraction:g}"],
        ["breathing rate (1/min)", f"{rate:.1f}",
         f"{physiology.respiration_rate_bpm:g} +- {physiology.respiration_drift_bpm:g}"]])


def dose_rows(config: Config, starts: dict[str, dict]) -> list[tuple[str, float]]:
    """(what, Gy) of every run booked for the mouse, named by plan and day."""
    rows = []
    for uid, plan, gy in DoseLedger(config.dose.ledger_path).deliveries(MOUSE["subject_id"]):
        day = starts.get(uid, {}).get("subject", {}).get("day")
        rows.append((f"{'series' if plan == 'time_series' else 'loading'} day {day:g}" if day is not None else plan,
                     gy))
    return rows


def dose_table(rows: Sequence[tuple[str, float]], budget_gy: float) -> Table:
    table = [["run", "dose (Gy)", "cumulative (Gy)"]]
    total = 0.0
    for name, gy in rows:
        total += gy
        table.append([name, f"{gy:.4f}", f"{total:.4f}"])
    table.append(["budget", "", f"{budget_gy:g}"])
    return Table(f"Dose to {MOUSE['subject_id']}: {100 * total / budget_gy:.0f} % of the budget", table)


def _projection(nxs: Path) -> np.ndarray:
    """The first projection of an NXtomo file, flat-field corrected (transmission)."""
    with h5py.File(nxs, "r") as h5:
        keys = h5["entry/instrument/detector/image_key"][()]
        data = h5["entry/instrument/detector/data"]
        dark = data[np.flatnonzero(keys == 2)].mean(axis=0)
        flat = data[np.flatnonzero(keys == 1)].mean(axis=0)
        first = data[int(np.flatnonzero(keys == 0)[0])].astype(np.float32)
    return (first - dark) / np.maximum(flat - dark, 1e-6)


def build_report(out: Path, acquisition: Acquisition, points: Sequence[TimePoint], intervals: Sequence[Interval],
                 tables: Sequence[Table], respiration_data: tuple[np.ndarray, np.ndarray, np.ndarray],
                 doses: Sequence[tuple[str, float]]) -> Path:
    """report.html and its figures under ``out/figures``."""
    from tqdm import tqdm

    config = acquisition.config
    directory = out / "figures"
    directory.mkdir(parents=True, exist_ok=True)
    voxel_um = points[0].session.volume.voxel_size_um
    overall = intervals[-1]
    first_nxs = acquisition.nxtomo_of(points[0].raw_start)[0]
    extension, force = acquisition.force_extension()
    time_s, phase, gate = respiration_data
    shown = time_s <= min(4.0, time_s[-1])
    jobs = [
        (lambda p: figures.projection_figure(p, _projection(first_nxs), voxel_um,
                                             f"Day {points[0].day:g}, first projection (5 ms, in vivo)"),
         "projection.png", "A projection of the first session, flat-field corrected."),
        (lambda p: figures.orthogonal_slices_figure(p, {t.day: t.session.volume.data for t in points},
                                                    {t.day: t.session.labels.data for t in points}, voxel_um, "1/mm"),
         "slices.png", "Orthogonal mid slices of each session's volume, bone and pores (segmentation) overlaid."),
        (lambda p: figures.morphometry_figure(
            p, [t.day for t in points],
            {k: [_morphometry_values(t.measured)[k] for t in points] for _, k, _, _ in MORPHOMETRY_ROWS},
            {k: [_morphometry_values(t.truth)[k] for t in points] for _, k, _, _ in MORPHOMETRY_ROWS}),
         "morphometry.png", "BV/TV, cortical thickness, lacunar porosity and density against time. At this "
         "protocol the pores found in the scans are mostly noise (their share on true pores is in the table)."),
        (lambda p: figures.remodelling_map_figure(
            p, change_map(overall.first.session.labels.data, overall.last.session.labels.data,
                          overall.measured.transform), voxel_um, f"day {overall.first.day:g} to {overall.last.day:g}"),
         "remodelling_map.png", "Formed, resorbed and quiescent bone between the first and the last session."),
        (lambda p: figures.force_extension_figure(p, extension, force, acquisition.holds(),
                                                  config.sim.specimen.yield_force_n),
         "force_extension.png", "Force against extension of the in-situ loading; a tomogram at each hold."),
        (lambda p: figures.respiration_figure(p, time_s[shown], phase[shown], gate[shown],
                                              f"Respiration and gate, day {points[0].day:g} (first seconds)"),
         "respiration.png", "Respiratory phase of each projection frame and the gate (retrospective gating)."),
        (lambda p: figures.dose_figure(p, doses, config.dose.budget_gy, MOUSE["subject_id"]),
         "dose.png", "Dose of each run and the cumulative dose against the budget."),
    ]
    drawn = [Figure(draw(directory / name), caption)
             for draw, name, caption in tqdm(jobs, desc="report figures", unit="figure", file=sys.stderr)]
    intro = (f"Mouse {MOUSE['subject_id']} on the simulated instrument: sessions on days "
             f"{', '.join(f'{t.day:g}' for t in points)}, each {SERIES['tomograms']} respiratory-gated fly tomograms "
             f"({SERIES['projections']} projections, {1e3 * SERIES['exposure_s']:g} ms, {voxel_um:.2g} um voxels); "
             f"in-situ loading at {', '.join(f'{f:g}' for f in LOADING['loads_n'])} N. Every figure beside the "
             "simulator's ground truth and what it applied.")
    return write_report(out / "report.html", "nanoscope demo: a longitudinal in-vivo study", intro, tables, drawn)


def analyse(acquisition: Acquisition, out: Path, catalog) -> tuple[list[Table], Path]:
    """Everything after the acquisition: per session, per interval, the catalog's analysis runs, the report."""
    from tqdm import tqdm

    config = acquisition.config
    analysis = config.analysis
    settings = MorphometrySettings(analysis.lacuna_min_volume_um3, analysis.lacuna_min_thickness_um,
                                   analysis.thickness_step_voxels)
    results = out / "analysis"
    results.mkdir(parents=True, exist_ok=True)
    points = [time_point(acquisition, day, settings, results)
              for day in tqdm(acquisition.days, desc="sessions: segmentation, morphometry", unit="session",
                              file=sys.stderr)]
    pairs = list(zip(points[:-1], points[1:]))
    if len(points) > 2:
        pairs.append((points[0], points[-1]))
    intervals = [interval(a, b, analysis.remodeling_min_cluster_voxels)
                 for a, b in tqdm(pairs, desc="remodelling: registration, rates", unit="interval", file=sys.stderr)]
    publish(catalog, points, intervals)
    catalog.close()
    respiration_data = respiration(acquisition)
    doses = dose_rows(config, acquisition.log.starts)
    tables = [morphometry_table(points), *(remodelling_table(change) for change in intervals),
              loading_table(acquisition, config), respiration_table(respiration_data[2], respiration_data[0],
                                                                    respiration_data[1], config),
              dose_table(doses, config.dose.budget_gy)]
    return tables, build_report(out, acquisition, points, intervals, tables, respiration_data, doses)


def summary(tables: Sequence[Table]) -> str:
    """The terminal summary: every table of the report."""
    return "\n\n".join(text_table(table) for table in tables)


def catalog_summary(config: Config, days: Sequence[float]) -> str:
    """The study's runs as the catalog finds them by subject and study day (docs/catalog.md)."""
    from tiled.queries import Key

    from ..pipeline.catalog import open_catalog

    catalog = open_catalog(config)
    lines = [f"== The catalog ({config.catalog.path(config.paths.data_path)}): runs of mouse "
             f"{MOUSE['subject_id']}, by study day"]
    mouse = catalog.search(Key("start.subject.subject_id") == MOUSE["subject_id"])
    for day in days:
        for uid, run in mouse.search(Key("start.subject.day") == day).items():
            start: dict[str, Any] = run.metadata["start"]
            kind = start.get("analysis") or start.get("plan_name")
            frames = run["projections"]["image"].shape[0] if "projections" in run else 0
            raw = start.get("raw_run_uid", "")
            lines.append(f"  day {day:>4}  {kind:<22} {frames:>5} projections  {uid}"
                         + (f"  of {raw}" if raw else ""))
    return "\n".join(lines)
