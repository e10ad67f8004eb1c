"""PNG figures of the cohort table: each measure over time, one line (mean +- sd) and the mice per cohort."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .cohort_table import UNITS
from .tasks import INTERVAL_MEASURES, TOMOGRAM_MEASURES

TITLES = {"bv_mm3": "Bone volume", "tv_mm3": "Total volume", "bv_tv": "BV/TV", "ct_th_um": "Cortical thickness",
          "porosity": "Porosity (pores resolved)",
          "cortical_porosity": "Cortical porosity (grey values)", "lacunae_count": "Lacunae",
          "lacunae_density_per_mm3": "Lacuna density",
          "bfr_per_day": "Bone formation rate", "brr_per_day": "Bone resorption rate",
          "mar_um_per_day": "Mineral apposition rate", "mar_periosteal_um_per_day": "MAR, periosteal",
          "mar_endosteal_um_per_day": "MAR, endosteal", "mrr_um_per_day": "Mineral resorption rate",
          "ms_bs": "Mineralising surface MS/BS", "es_bs": "Eroded surface ES/BS"}


def _time(time_point: str) -> float:
    """A day, or the middle of an interval 'a-b'."""
    return float(np.mean([float(d) for d in time_point.split("-")]))


def plot_measures(rows: list[dict], measures: tuple[str, ...], path: Path, xlabel: str) -> Path:
    """One panel per measure: each mouse (dots) and each cohort's mean +- sd (line, error bars) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [m for m in measures if any(r["measure"] == m for r in rows)]
    cohorts = sorted({r["cohort"] for r in rows})
    columns = 3
    lines = max(1, math.ceil(len(present) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, measure in zip(axes.ravel(), present):
        for c, cohort in enumerate(cohorts):
            own = [r for r in rows if r["measure"] == measure and r["cohort"] == cohort and r["value"] is not None]
            points = sorted({r["time_point"] for r in own}, key=_time)
            if not points:
                continue
            x = np.array([_time(p) for p in points])
            values = [np.array([r["value"] for r in own if r["time_point"] == p], float) for p in points]
            means = np.array([v.mean() for v in values])
            sds = np.array([v.std(ddof=1) if v.size > 1 else 0.0 for v in values])
            jitter = (c - (len(cohorts) - 1) / 2) * 0.15
            ax.errorbar(x + jitter, means, yerr=sds, color=colours(c), marker="o", capsize=3, label=cohort)
            for xi, v in zip(x, values):
                ax.scatter(np.full(v.size, xi + jitter), v, color=colours(c), s=10, alpha=0.4)
        units = UNITS[measure]
        ax.set_title(TITLES[measure], fontsize=10)
        ax.set_ylabel(f"{measure} ({units})" if units else measure, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(present):]:
        ax.set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_study(rows: list[dict], folder: Path) -> list[Path]:
    """cohort_morphometry.png (per study day) and cohort_remodeling.png (per interval, at its middle)."""
    return [plot_measures(rows, TOMOGRAM_MEASURES, folder / "cohort_morphometry.png", "study day"),
            plot_measures(rows, INTERVAL_MEASURES, folder / "cohort_remodeling.png",
                          "interval middle (study day)")]
