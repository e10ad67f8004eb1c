"""The cohort table: every measure by cohort and time point (mean, sd, n), and each cohort against a reference.

Time points are study days for the tomograms' measures and intervals (``from-to`` days)
for the remodelling's. The comparison of a cohort with the reference cohort at one time
point reports the difference of means, Welch's t-test (unequal variances: the groups'
spreads need not match) and the Mann-Whitney U test (no normality assumed: a handful of
mice per group) with their two-sided p-values, and Hedges' g (the standardised
difference, bias-corrected for small groups; Hedges & Olkin 1985). Written as JSON and
two CSV files.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .tasks import INTERVAL_MEASURES, TOMOGRAM_MEASURES

UNITS = {"bv_mm3": "mm^3", "tv_mm3": "mm^3", "bv_tv": "fraction", "ct_th_um": "um", "porosity": "fraction",
         "cortical_porosity": "fraction", "lacunae_count": "count",
         "lacunae_density_per_mm3": "1/mm^3", "bfr_per_day": "1/day", "brr_per_day": "1/day",
         "mar_um_per_day": "um/day", "mar_periosteal_um_per_day": "um/day", "mar_endosteal_um_per_day": "um/day",
         "mrr_um_per_day": "um/day", "ms_bs": "fraction", "es_bs": "fraction"}


def hedges_g(group: np.ndarray, reference: np.ndarray) -> float:
    """(mean(group) - mean(reference)) / pooled sd, times the small-sample correction 1 - 3 / (4 (n1 + n2) - 9)."""
    n1, n2 = len(group), len(reference)
    if n1 < 2 or n2 < 2:
        return math.nan
    pooled = math.sqrt(((n1 - 1) * np.var(group, ddof=1) + (n2 - 1) * np.var(reference, ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return math.nan
    return float((np.mean(group) - np.mean(reference)) / pooled * (1 - 3 / (4 * (n1 + n2) - 9)))


def observations(tomograms: Iterable[Mapping], intervals: Iterable[Mapping]) -> list[dict[str, Any]]:
    """One row per subject, time point and measure: the long table everything else is made from."""
    rows = []
    for result in tomograms:
        record = result["record"]
        for measure in TOMOGRAM_MEASURES:
            rows.append({"subject_id": record["subject_id"], "cohort": record["cohort"],
                         "time_point": f"{record['day']:g}", "measure": measure, "value": result["measures"][measure]})
    for result in intervals:
        for measure in INTERVAL_MEASURES:
            rows.append({"subject_id": result["subject_id"], "cohort": result["cohort"],
                         "time_point": f"{result['from_day']:g}-{result['to_day']:g}", "measure": measure,
                         "value": result["measures"][measure]})
    return rows


def _values(rows: list[dict], measure: str, cohort: str, time_point: str) -> np.ndarray:
    values = [r["value"] for r in rows if (r["measure"], r["cohort"], r["time_point"]) == (measure, cohort, time_point)]
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def _groups(rows: list[dict]) -> list[tuple[str, str]]:
    """(measure, time point) in measure order, time points in time order."""
    order = {m: i for i, m in enumerate(TOMOGRAM_MEASURES + INTERVAL_MEASURES)}
    pairs = {(r["measure"], r["time_point"]) for r in rows}
    return sorted(pairs, key=lambda p: (order[p[0]], [float(d) for d in p[1].split("-")]))


def summarise(rows: list[dict], reference: str | None = None) -> dict[str, Any]:
    """The table (mean, sd, n per measure, cohort and time point) and each cohort's comparison with ``reference``
    (default: the first cohort in alphabetical order)."""
    cohorts = sorted({r["cohort"] for r in rows})
    if not cohorts:
        raise ValueError("no results to summarise: every task failed or nothing was selected")
    reference = reference or cohorts[0]
    if reference not in cohorts:
        raise ValueError(f"reference cohort {reference!r} is not in the study; cohorts: {', '.join(cohorts)}")
    table, comparisons = [], []
    for measure, time_point in _groups(rows):
        for cohort in cohorts:
            values = _values(rows, measure, cohort, time_point)
            if values.size:
                table.append({"measure": measure, "units": UNITS[measure], "cohort": cohort, "time_point": time_point,
                              "mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1
                              else math.nan, "n": int(values.size)})
        base = _values(rows, measure, reference, time_point)
        for cohort in cohorts:
            values = _values(rows, measure, cohort, time_point)
            if cohort == reference or values.size == 0 or base.size == 0:
                continue
            comparisons.append(_compare(measure, time_point, cohort, values, reference, base))
    return {"reference": reference, "cohorts": cohorts, "table": table, "comparisons": comparisons}


def _compare(measure: str, time_point: str, cohort: str, values: np.ndarray, reference: str,
             base: np.ndarray) -> dict[str, Any]:
    testable = values.size >= 2 and base.size >= 2 and (np.ptp(values) > 0 or np.ptp(base) > 0)
    welch = stats.ttest_ind(values, base, equal_var=False).pvalue if testable else math.nan
    mann_whitney = stats.mannwhitneyu(values, base, alternative="two-sided").pvalue if testable else math.nan
    return {"measure": measure, "units": UNITS[measure], "time_point": time_point, "cohort": cohort,
            "reference": reference, "difference": float(values.mean() - base.mean()), "n": int(values.size),
            "n_reference": int(base.size), "welch_p": float(welch), "mann_whitney_p": float(mann_whitney),
            "hedges_g": hedges_g(values, base)}


def write_summary(summary: dict[str, Any], rows: list[dict], folder: Path) -> list[Path]:
    """cohort_table.json (everything), cohort_table.csv, cohort_comparisons.csv and observations.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "cohort_table.json", folder / "cohort_table.csv", folder / "cohort_comparisons.csv",
             folder / "observations.csv"]
    paths[0].write_text(json.dumps({**summary, "observations": rows}, indent=2))
    for path, records in zip(paths[1:], (summary["table"], summary["comparisons"], rows)):
        with path.open("w", newline="") as fh:
            if records:
                writer = csv.DictWriter(fh, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
    return paths
