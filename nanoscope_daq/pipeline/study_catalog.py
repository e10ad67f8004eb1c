"""A study's tomograms found in the run catalog, and the study's results linked there as analysis runs.

``CatalogTomograms`` answers the study's ``TomogramSource`` protocol from the catalog:
raw runs are found by the start document's keys (``subject.*``, ``plan_name``; DESIGN.md)
and each row of a run's ``tomograms`` stream names its NXtomo file (``nxtomo_file``,
added by the catalog writer), which is read exactly as ``nanoscope analyze FILES`` reads it.

``link_results`` records each tomogram's and each interval's result as an analysis run
(``study_tomogram``, ``study_interval``) carrying ``raw_run_uid``, the result's files,
its provenance and a digest of what it was made from. A result already linked with the
same digest is not linked again, so a batch resumed or rerun leaves one run per result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.study.batch import BatchResult, consecutive_pairs, interval_name
from ..analysis.study.sources import Selection, SelectionError, TomogramRecord, choose, read_record
from ..analysis.study.tasks import Layout
from .analysis_run import AnalysisRun
from .catalog import table_rows, tiled_writer

STUDY_TOMOGRAM = "study_tomogram"
"""The analysis name (and ``plan_name``) of a tomogram's reconstruction, segmentation and morphometry."""
STUDY_INTERVAL = "study_interval"
"""The analysis name of the remodelling between two time points (linked to the follow-up's raw run)."""


def selection_queries(selection: Selection) -> list[Any]:
    """Tiled queries on the start document for each non-empty criterion of ``selection``."""
    from tiled.queries import In

    criteria = (("start.subject.subject_id", selection.subjects), ("start.subject.cohort", selection.cohorts),
                ("start.subject.treatment", selection.treatments), ("start.subject.day", selection.days),
                ("start.plan_name", selection.plans))
    return [In(key, list(values)) for key, values in criteria if values]


@dataclass(frozen=True)
class CatalogTomograms:
    """The tomograms of the catalog's raw runs (those with a ``tomograms`` stream) that match a selection.

    Parameters
    ----------
    catalog : tiled client node
        The run catalog (:func:`pipeline.catalog.open_catalog`).
    where : str
        How to name the catalog in messages (its address).
    """

    catalog: Any
    where: str

    def tomograms(self, selection: Selection) -> list[TomogramRecord]:
        runs = self.catalog
        for query in selection_queries(selection):
            runs = runs.search(query)
        files, missing = [], []
        for run in runs.values():
            if "tomograms" not in run:  # analysis runs, source start-ups, runs stopped before a tomogram
                continue
            for row in table_rows(run["tomograms"]):
                path = Path(row["nxtomo_file"])
                (files if path.is_file() else missing).append(path)
        if missing:
            raise SelectionError(f"the catalog at {self.where} links NXtomo files that do not exist: "
                                 f"{', '.join(map(str, missing))}; leave their runs out (--subject/--day/--plan) or "
                                 "write them again (`nanoscope recover` on the run's journal)")
        if not files:
            raise SelectionError(f"no run with tomograms in the catalog at {self.where} matches {selection}; "
                                 "scans are catalogued as they run (nanoscope scan, serve, demo)")
        return choose([read_record(path) for path in files], selection)


def result_digest(result: Mapping[str, Any]) -> str:
    """A short digest of what a result was made from (its inputs' fingerprint and the settings)."""
    return hashlib.sha256(json.dumps(result["fingerprint"], sort_keys=True).encode()).hexdigest()[:16]


def raw_start(catalog: Any, record: TomogramRecord) -> dict[str, Any]:
    """The raw run's start document, or (a run not in this catalog) what its NXtomo file says of it."""
    if record.raw_run_uid and record.raw_run_uid in catalog:
        return dict(catalog[record.raw_run_uid].metadata["start"])
    return {"uid": record.raw_run_uid, "plan_name": record.plan_name,
            "subject": {"subject_id": record.subject_id, "cohort": record.cohort, "treatment": record.treatment,
                        "day": record.day}}


def linked(catalog: Any, raw_run_uid: str, analysis: str) -> set[str]:
    """Digests of the results of ``analysis`` already linked to ``raw_run_uid``."""
    from tiled.queries import Key

    runs = catalog.search(Key("start.raw_run_uid") == raw_run_uid).search(Key("start.analysis") == analysis)
    return {run.metadata["start"].get("result_digest", "") for run in runs.values()}


def link_results(catalog: Any, batch: BatchResult, records: Iterable[TomogramRecord], layout: Layout,
                 *, batch_size: int = 200) -> list[str]:
    """Record each result of ``batch`` not linked yet as an analysis run of its raw run; returns their uids.

    Parameters
    ----------
    catalog : tiled client node
        The run catalog, writable.
    batch : BatchResult
        The results of ``nanoscope analyze`` (those run now and those done before).
    records : iterable of TomogramRecord
        The tomograms of the batch.
    layout : Layout
        Where the results' files are.
    batch_size : int
        Events gathered before one catalog write.
    """
    records = list(records)
    uids: list[str] = []

    def publish_run(record: TomogramRecord, analysis: str, result: Mapping[str, Any], result_file: Path,
                    extra: Mapping[str, Any]) -> None:
        digest = result_digest(result)
        if digest in linked(catalog, record.raw_run_uid, analysis):
            return
        write: Callable[[str, dict], None] = tiled_writer(catalog, batch_size)
        run = AnalysisRun(write, raw_start(catalog, record), analysis, {
            "result_digest": digest, "result_file": str(result_file), "provenance": result["provenance"], **extra})
        run.event("measures", result["measures"])
        run.stop()
        uids.append(run.uid)

    for record in records:
        result = batch.tomograms.get(record.key)
        if result is not None:
            publish_run(record, STUDY_TOMOGRAM, result, layout.tomogram(record, "analysis.json"),
                        {"nxtomo_file": str(record.path), "outputs": result["outputs"], "gating": result["gating"]})
    for before, after in consecutive_pairs(records):
        result = batch.intervals.get(interval_name(before, after))
        if result is not None:
            publish_run(after, STUDY_INTERVAL, result, layout.interval(before, after),
                        {"baseline_run_uid": before.raw_run_uid, "from_day": before.day, "to_day": after.day})
    return uids
