"""``nanoscope demo``: the main job, a 4D in-vivo study of one mouse on the simulated instrument.

1. The X-ray source is started, conditioned and ramped, its readings shown live.
2. Two imaging sessions, study days 0 and 10: each is a respiratory-gated time series of
   fly tomograms of the anaesthetised mouse (bluesky ``time_series``). Its frames are
   reconstructed online as they arrive, and every volume is printed. Each tomogram is
   written as an NXtomo file. Between sessions the demo moves the simulated mouse on to the
   next study day (``<P>SIM:DAY``): in simulation the days pass at once.
3. The remodelling from the first session to the second is computed from the NXtomo
   files (analysis/longitudinal.py). It is shown next to the same analysis of the
   simulator's ground-truth labels and next to the rates the simulator applied.

The specimen is the tiny leg (physics/presets.py), so the study takes a few minutes
on two cores. The whole configuration is written to ``<out>/demo.toml``.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py

from .config import Config, overrides_toml
from .epics_env import configure_client, free_port

if TYPE_CHECKING:
    from .analysis.remodeling import Remodeling

DEMO_TIME_SCALE = 20.0
"""Source warm-up (2 min) runs 20x faster in the demo."""

STUDY_DAYS = (0.0, 10.0)
"""Sessions on these study days (the tiny leg's remodelling is defined up to day 10)."""

MOUSE = {"subject_id": "M01", "cohort": "demo", "treatment": "none", "anaesthesia": "isoflurane 2%"}

SERIES: dict[str, Any] = {"tomograms": 2, "projections": 360, "range_deg": 360.0, "exposure_s": 0.005,
                          "binning": 1, "kv": 60.0, "power_w": 10.0, "gating": "retrospective"}
"""Each session: two back-to-back tomograms of a full turn (the cone beam needs 360 degrees)."""

DEMO_SECTIONS: dict[str, dict[str, Any]] = {
    "scan": {"darks": 4, "flats": 8, "flats_offset_mm": 0.5},
    "recon": {"online": True, "online_phase_bins": 2},
}
"""Beyond the tiny leg: few darks and flats, and two respiratory phase bins online."""

WATCHED_COLUMNS = ["xrm_source_kv", "xrm_source_power", "xrm_source_current", "xrm_physio_rate", "xrm_physio_gate",
                   "xrm_physio_heart_rate"]
GROUND_TRUTH_WAIT_S = 600.0
"""The simulator writes each day's ground truth in the background while the camera is idle."""


def demo_config(config: Config, out: Path) -> tuple[Config, Path]:
    """The demo's configuration (``config`` with the tiny leg, data under ``out``), written to out/demo.toml."""
    from .physics.presets import tiny_leg_overrides

    demo = config.replace(**tiny_leg_overrides(), **DEMO_SECTIONS, paths={"data_dir": str(out / "data")},
                          dose={"ledger_path": str(out / "dose-ledger.sqlite")}, catalog={"uri": ""})
    path = out / "demo.toml"
    path.write_text(overrides_toml(dataclasses.asdict(demo)))
    return demo, path


def watch_while(status, readables: Iterable, period: float, md: dict) -> Generator:
    """A run that reads ``readables`` every ``period`` s until ``status`` finishes."""
    from bluesky import plan_stubs as bps
    from bluesky import preprocessors as bpp

    @bpp.run_decorator(md=md)
    def inner():
        while True:
            yield from bps.trigger_and_read(list(readables))
            if status.done:
                break
            yield from bps.sleep(period)
        if not status.success:
            raise status.exception()

    return (yield from inner())


def source_start_up(xrm) -> Generator:
    """Jet start-up and conditioning, then the high voltage, each its own run watching the source and the mouse."""
    watched = [xrm.source, xrm.physio]
    print("\n== 1. X-ray source: jet start-up and conditioning, then high voltage; the mouse's vital signs",
          flush=True)
    yield from watch_while(xrm.source.warm_up(), watched, 0.5, {"plan_name": "demo_warm_up"})
    yield from watch_while(xrm.source.set_output(SERIES["kv"], SERIES["power_w"]), watched, 0.25,
                           {"plan_name": "demo_ramp"})


def source_shut_down(xrm) -> Generator:
    """Shutter closed, high voltage off, stage home."""
    from bluesky import plan_stubs as bps

    yield from bps.mv(xrm.source.shutter, "close")
    yield from bps.mv(xrm.source.hv, "Off")
    yield from bps.mv(xrm.rot, 0.0)


def session(xrm, day: float, config: Config) -> Generator:
    """One imaging session of the mouse on ``day``: a gated time series of fly tomograms."""
    from .plans import time_series

    return (yield from time_series(xrm, subject={**MOUSE, "day": day}, config=config, **SERIES,
                                   md={"demo_session_day": day}))


def truth_remodeling(directory: Path, baseline_day: float, followup_day: float) -> tuple[Remodeling, dict]:
    """remodeling.py on the simulator's ground-truth labels of both days, and the rates it applied.

    Call while the simulator runs: it writes those files in the background, and removes
    an unfinished one when it stops."""
    from .analysis.remodeling import remodeling
    from .sim.ioc.camera.ground_truth import ground_truth_name

    labels, applied = [], {}
    for day in (baseline_day, followup_day):
        path = directory / ground_truth_name(day, SERIES["binning"])
        deadline = time.monotonic() + GROUND_TRUTH_WAIT_S
        while not path.is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulator wrote no {path} within {GROUND_TRUTH_WAIT_S:g} s")
            time.sleep(1.0)
        with h5py.File(path, "r") as h5:
            labels.append(h5["labels"][()])
            voxel_um = float(h5["labels"].attrs["voxel_size_um"])
            applied = dict(h5["remodeling"].attrs)  # kept for the follow-up: day 0 to that day
    return remodeling(*labels, voxel_um, followup_day - baseline_day, register=False), applied


def remodeling_table(measured: Remodeling, truth: Remodeling, applied: dict) -> str:
    """Measured rates next to the ground-truth labels' and the simulator's (it forms bone on every surface)."""
    rows = [
        ("BFR (%/day)", 100 * measured.bfr_per_day, 100 * truth.bfr_per_day, None),
        ("BRR (%/day)", 100 * measured.brr_per_day, 100 * truth.brr_per_day, None),
        ("MAR periosteal (um/day)", measured.mar_periosteal_um_per_day, truth.mar_periosteal_um_per_day,
         applied["periosteal_mar_um_per_day"]),
        ("MAR endosteal (um/day)", measured.mar_endosteal_um_per_day, truth.mar_endosteal_um_per_day,
         applied["endosteal_mar_um_per_day"]),
        ("MS/BS", measured.ms_bs, truth.ms_bs, 1.0),
        ("ES/BS", measured.es_bs, truth.es_bs, None),
    ]
    lines = [f"{'':26}{'from the scans':>16}{'ground truth':>14}{'applied':>10}"]
    for name, scans, labels, value in rows:
        lines.append(f"{name:26}{scans:16.3f}{labels:14.3f}" + (f"{value:10.3f}" if value is not None else ""))
    return "\n".join(lines)


def catalog_summary(config: Config) -> str:
    """The study's runs as the catalog finds them by subject (docs/catalog.md)."""
    from tiled.queries import Key

    from .pipeline.catalog import open_catalog

    catalog = open_catalog(config)
    runs = catalog.search(Key("start.subject.subject_id") == MOUSE["subject_id"])
    lines = [f"\n== The catalog ({config.catalog.path(config.paths.data_path)}): runs of mouse "
             f"{MOUSE['subject_id']}"]
    for uid, run in runs.items():
        start = run.metadata["start"]
        kind = start.get("analysis") or start.get("plan_name")
        frames = run["projections"]["image"].shape[0] if "projections" in run else 0
        lines.append(f"  day {start['subject']['day']:>4}  {kind:<22} {frames:>5} projections  {uid}")
    return "\n".join(lines)


def run_demo(
    config: Config, *, port: int | None = None, out: str | None = None, time_scale: float | None = None
) -> int:
    """Start ``nanoscope sim`` (on a free port unless ``port``), run the study, analyse it, stop the simulator."""
    port = port or free_port()
    configure_client([port])
    from bluesky import RunEngine
    from bluesky.callbacks import LiveTable
    from ophyd import EpicsSignal

    from .analysis.longitudinal import Session, remodeling_between
    from .devices import Instrument
    from .devices.detector import path_template
    from .pipeline import NXtomoWriter
    from .pipeline.catalog import CatalogWriter
    from .pipeline.streaming import StreamingReconstruction
    from .sim.process import SimProcess

    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="nanoscope-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    config, config_path = demo_config(config, out_dir)
    data_dir = config.paths.data_path
    prefix = config.epics.prefix
    print(f"nanoscope demo: simulated instrument {prefix} on 127.0.0.1:{port}, data in {data_dir}, "
          f"configuration {config_path}")
    nxtomo_files: list[Path] = []
    with SimProcess(prefix, port, data_dir=data_dir, time_scale=time_scale or DEMO_TIME_SCALE,
                    seed=config.sim.seed, config=config_path) as sim:
        print(sim.ready_line, flush=True)
        xrm = Instrument(prefix, name="xrm")
        study_day = EpicsSignal(prefix + "SIM:DAY", name="study_day")
        xrm.wait_for_connection(timeout=30)
        study_day.wait_for_connection(timeout=30)
        xrm.det.hdf1.write_path_template = path_template(data_dir)
        engine = RunEngine({"operator": "demo"})
        table = engine.subscribe(LiveTable(WATCHED_COLUMNS, default_prec=2))
        engine.subscribe(NXtomoWriter(on_file_written=lambda path: (nxtomo_files.append(Path(path)),
                                                                    print(f"  NXtomo file: {path}", flush=True))))
        catalog = CatalogWriter.from_config(config)
        engine.subscribe(catalog)
        online = StreamingReconstruction(config=config, publish=catalog,
                                         on_volume=lambda path: print(f"  online volume: {path}", flush=True))
        engine.subscribe(online)
        sessions: list[Session] = []
        try:
            engine(source_start_up(xrm))
            engine.unsubscribe(table)
            for number, day in enumerate(STUDY_DAYS, start=2):
                print(f"\n== {number}. Session on study day {day:g}: mouse {MOUSE['subject_id']}, "
                      f"{SERIES['tomograms']} gated fly tomograms, reconstructed online", flush=True)
                study_day.put(day, wait=True)
                written = len(nxtomo_files)
                engine(session(xrm, day, config))
                sessions.append(Session(nxtomo_files[written], day))  # the session's first tomogram
            print(f"\n== {len(STUDY_DAYS) + 2}. Shutter closed, high voltage off, stage home; "
                  "the online reconstruction finishes", flush=True)
            engine(source_shut_down(xrm))
            online.wait(600)
        finally:
            online.close()  # the last volumes are written before the analysis
            catalog.close()
            xrm.destroy()  # disconnect before the IOC goes away
            study_day.destroy()
        print(f"\n== {len(STUDY_DAYS) + 3}. Remodelling from day {STUDY_DAYS[0]:g} to day {STUDY_DAYS[-1]:g}, "
              "from the first tomogram of each session", flush=True)
        measured = remodeling_between(sessions[0], sessions[-1], config.recon)
        truth, applied = truth_remodeling(sessions[0].nxs.parent, STUDY_DAYS[0], STUDY_DAYS[-1])
        print(remodeling_table(measured, truth, applied), flush=True)
    print(catalog_summary(config), flush=True)
    print("\nnanoscope demo: done; the simulated instrument is stopped.")
    return 0
