"""``nanoscope analyze``: a study's tomograms on dask.distributed, then the cohort table and figures.

Tomograms come from NXtomo files or from the run catalog (``--catalog``); with the
catalog, every result is also linked there as an analysis run of its raw run.
The selection is checked before the work's modules (torch, dask, matplotlib) load.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .analysis.study.sources import NXtomoFiles, Selection, SelectionError, TomogramRecord, TomogramSource
from .config import Config, load_config

if TYPE_CHECKING:
    from .analysis.study.batch import BatchResult


def add_analyze_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("analyze", help="reconstruct, segment and measure a study's tomograms on dask, "
                                            "then the cohort table")
    parser.add_argument("inputs", nargs="*", help="NXtomo files, or directories searched for *.nxs")
    parser.add_argument("--catalog", nargs="?", const="", metavar="URI",
                        help="select the tomograms from the run catalog (the configured one, or the Tiled server at "
                             "URI) and link every result there as an analysis run")
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
    from .analysis.study.cohort_table import observations, summarise, write_summary
    from .analysis.study.plots import plot_study

    rows = observations(batch.tomograms.values(), batch.intervals.values())
    return write_summary(summarise(rows, reference), rows, folder) + plot_study(rows, folder)


def open_study_catalog(config: Config, uri: str):
    """The catalog ``--catalog`` names (the configured one when ``uri`` is empty) and how to call it."""
    from .pipeline.catalog import open_catalog

    if uri:
        config = config.replace(catalog={"uri": uri})
    where = config.catalog.uri or f"{config.catalog.path(config.paths.data_path)} (embedded)"
    try:
        return open_catalog(config), where
    except Exception as exc:  # noqa: BLE001 -- httpx, tiled and sqlite errors alike mean: no catalog there
        raise ConnectionError(f"cannot open the catalog at {where} ({type(exc).__name__}: {exc}); start it "
                              "(`nanoscope serve`) or give its address with --catalog URI") from None


def study_source(args: argparse.Namespace, catalog) -> TomogramSource:
    """The NXtomo files given, else the catalog's runs."""
    if args.inputs:
        return NXtomoFiles([Path(p) for p in args.inputs])
    if catalog is None:
        raise SelectionError("give NXtomo files (or directories holding them), or --catalog to select the "
                             "tomograms from the run catalog")
    from .pipeline.study_catalog import CatalogTomograms

    return CatalogTomograms(*catalog)


def run_analyze(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    selection = Selection(tuple(args.subject), tuple(args.cohort), tuple(args.treatment), tuple(args.day),
                          tuple(args.plan))
    try:
        catalog = None if args.catalog is None else open_study_catalog(config, args.catalog)
        records = study_source(args, catalog).tomograms(selection)
    except (SelectionError, ConnectionError) as exc:
        print(f"nanoscope analyze: {exc}", file=sys.stderr)
        return 2
    from .analysis.study.batch import DaskExecutor, run_batch
    from .analysis.study.cluster import study_client
    from .analysis.study.tasks import Layout, StudySettings

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
            batch = run_batch(executor, records, layout, settings, redo=args.redo,
                              max_task_voxels=config.study.max_task_voxels)
    except ConnectionError as exc:
        print(f"nanoscope analyze: {exc}", file=sys.stderr)
        return 2
    print(batch.summary())
    if catalog is not None:
        from .pipeline.study_catalog import link_results

        linked = link_results(catalog[0], batch, records, layout, batch_size=config.catalog.batch_size)
        print(f"linked {len(linked)} analysis runs in the catalog at {catalog[1]}")
    if batch.tomograms:
        for path in write_cohort_outputs(batch, study_folder(records, out), args.reference):
            print(path)
    return 1 if batch.count("failed") else 0
