"""``nanoscope demo``: the main job, a longitudinal in-vivo study of one mouse on the simulated instrument.

acquisition.py runs the study on the simulator (source start-up, a respiratory-gated time
series per study day reconstructed online, in-situ loading, every run in the catalog and
its dose in the ledger); study.py segments and measures each session, computes the
remodelling between sessions, sets every figure beside the ground truth and what the
simulator applied, links its analysis runs to the raw runs in the catalog and writes
``report.html`` with its figures. Everything lands under ``--out`` (default ``demo-out/``).

The specimen is the tiny leg (physics/presets.py), so the study takes a few minutes
on two cores. The whole configuration is written to ``<out>/demo.toml``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..config import Config
from ..epics_env import configure_client, free_port, serve_repeater

STUDY_DAYS = (0.0, 5.0, 10.0)
"""Sessions on these study days (the tiny leg's remodelling is defined up to day 10: max_study_day)."""
DEFAULT_OUT = "demo-out"


def _quiet_catalog() -> None:
    """No start-up banner from the embedded catalog's server (it sets its logger to INFO on import), and no
    deprecation notice from its in-process client: neither says anything about the study."""
    import warnings

    import tiled.server.app  # noqa: F401 -- imported for its logger's level, reset below

    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")


def run_demo(config: Config, *, port: int | None = None, out: str | None = None, time_scale: float | None = None,
             days: Sequence[float] | None = None) -> int:
    """Start ``nanoscope sim`` (on a free port unless ``port``), run the study, stop the simulator, analyse, report."""
    days = tuple(sorted(float(d) for d in (days or STUDY_DAYS)))
    if len(days) < 2 or len(set(days)) != len(days):
        raise SystemExit(f"nanoscope demo: --days needs at least two different study days, got {list(days)}")
    port = port or free_port()
    serve_repeater()
    configure_client([port])
    _quiet_catalog()

    from ..pipeline.catalog import CatalogWriter
    from .acquisition import DEMO_TIME_SCALE, acquire, demo_config
    from .study import analyse, catalog_summary, summary

    out_dir = Path(out or DEFAULT_OUT).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    config, config_path = demo_config(config, out_dir)
    print(f"nanoscope demo: output in {out_dir}\n  simulated instrument {config.epics.prefix} on 127.0.0.1:{port}, "
          f"data in {config.paths.data_path}, configuration {config_path}", flush=True)
    acquisition = acquire(config, config_path, days, port, time_scale or DEMO_TIME_SCALE)
    print("\nnanoscope demo: the simulated instrument is stopped.", flush=True)
    if acquisition.online_errors:
        raise SystemExit(f"nanoscope demo: the online reconstruction failed: {acquisition.online_errors}")
    print(f"\n== {len(days) + 4}. Analysis: each session segmented and measured, the remodelling between sessions, "
          "the report", flush=True)
    tables, report = analyse(acquisition, out_dir, CatalogWriter.from_config(config))
    print("\n" + summary(tables), flush=True)
    print("\n" + catalog_summary(config, days), flush=True)
    print(f"\nnanoscope demo: done. Report: {report}\nnanoscope demo: output in {out_dir}", flush=True)
    return 0
