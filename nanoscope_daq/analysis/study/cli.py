"""``nanoscope analyze``: a study's tomograms on dask.distributed, then the cohort table and figures."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ...config import load_config
from .batch import BatchResult, DaskExecutor, run_batch
from .cluster import study_client
from .cohort_table import observations, summarise, write_summary
from .plots import plot_study
from .sources import NXtomoFiles, Selection, SelectionError, TomogramRecord
from .tasks import Layout, StudySettings


def add_analyze_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("analyze", help="reconstruct, segment and measure a study's tomograms on dask, "
                                            "then the cohort table")
    parser.add_argument("inputs", nargs="+", help="NXtomo files, or directories searched for *.nxs")
    parser.add_argument("--subject", nargs="+", default=[], help="only these subject ids")
    parser.add_argument("--cohort", nargs="+", default=[], help="only these cohorts")
    parser.add_argument("--treatment", nargs="+", default=[], help="only these treatments")
    parser.add_argument("--day", nargs="+", type=float, default=[], help="only these study days")
    parser.add_argument("--plan", nargs="+", default=[], help="only tomograms of these plans")
    parser.add_argument("--scheduler", help="address of a running dask scheduler (default: a LocalCluster)")
    parser.add_argument("--workers", type=_positive, help="LocalCluster worker processes (default: one per CPU)")
    parser.add_argument("--out", help="results under OUT/<cohort>/<subject>/ and the cohort table in OUT "
                                      "(default: next to each input; the table in <inputs' folder>/study)")
    parser.add_argument("--redo", action="store_true", help="redo tasks whose results exist")
    parser.add_argument("--reference", help="cohort the others are compared with (default: first alphabetically)")
    parser.add_argument("--config", help="TOML file overriding the defaults (see default_config.toml)")
    parser.set_defaults(func=run_analyze)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def study_folder(records: list[TomogramRecord], out: Path | None) -> Path:
    """Where the cohort table goes: ``out``, or ``study/`` in the inputs' common folder."""
    return out if out else Path(os.path.commonpath([r.path.parent for r in records])) / "study"


def write_cohort_outputs(batch: BatchResult, folder: Path, reference: str | None) -> list[Path]:
    """The cohort table (JSON, CSV) and figures (PNG) of a batch's results."""
    rows = observations(batch.tomograms.values(), batch.intervals.values())
    return write_summary(summarise(rows, reference), rows, folder) + plot_study(rows, folder)


def run_analyze(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    selection = Selection(tuple(args.subject), tuple(args.cohort), tuple(args.treatment), tuple(args.day),
                          tuple(args.plan))
    try:
        records = NXtomoFiles([Path(p) for p in args.inputs]).tomograms(selection)
    except SelectionError as exc:
        print(f"nanoscope analyze: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    layout, settings = Layout(out), StudySettings.from_config(config)
    print(f"nanoscope analyze: {len(records)} tomograms of {len({r.subject_id for r in records})} subjects in "
          f"{len({r.cohort for r in records})} cohorts", flush=True)
    try:
        with study_client(args.scheduler, args.workers, config.study.scheduler_host,
                          config.study.allowed_failures) as client:
            executor = DaskExecutor(client)
            workers = client.scheduler_info()["workers"]
            print(f"dask scheduler {client.scheduler.address}, {len(workers)} workers"
                  + (", GPU resource declared" if executor.gpu else ", CPU only"), flush=True)
            batch = run_batch(executor, records, layout, settings, redo=args.redo)
    except ConnectionError as exc:
        print(f"nanoscope analyze: {exc}", file=sys.stderr)
        return 2
    print(batch.summary())
    if batch.tomograms:
        for path in write_cohort_outputs(batch, study_folder(records, out), args.reference):
            print(path)
    return 1 if batch.count("failed") else 0
