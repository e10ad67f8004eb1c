"""The demo's instrument side: the simulator, the RunEngine and its callbacks, and the study's plans.

1. The X-ray source is started, conditioned and ramped, its readings shown live.
2. One imaging session per study day: a respiratory-gated time series of fly tomograms of
   the anaesthetised mouse (bluesky ``time_series``), reconstructed online as it is
   acquired, each tomogram written as an NXtomo file. Between sessions the demo moves the
   simulated mouse on to the next study day (``<P>SIM:DAY``): in simulation the days pass
   at once.
3. After the last session, in-situ loading: step, hold and scan at loads below the
   specimen's yield (``insitu_loading``), with the loading cell's force and extension
   monitored throughout for the force-extension curve.

Every run goes to the catalog; the dose of every scan is booked in the ledger.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, overrides_toml

DEMO_TIME_SCALE = 20.0
"""Source warm-up (2 min) runs 20x faster in the demo."""

MOUSE = {"subject_id": "M01", "cohort": "demo", "treatment": "none", "anaesthesia": "isoflurane 2%"}

SERIES: dict[str, Any] = {"tomograms": 2, "projections": 360, "range_deg": 360.0, "exposure_s": 0.005,
                          "binning": 1, "kv": 60.0, "power_w": 10.0, "gating": "retrospective"}
"""Each session: two back-to-back tomograms of a full turn (the cone beam needs 360 degrees)."""

SPOT_UM = 5.0
"""The source's smallest focal spot: at 10 W it costs no flux (the jet takes 25 W per um of spot), and at the
demo's magnification of 5 it blurs by 20 um at the detector instead of the default 10 um spot's 40."""

LOADING: dict[str, Any] = {"loads_n": (4.0, 8.0), "hold_s": 1.0, "projections": 180, "range_deg": 360.0,
                           "exposure_s": 0.005, "binning": 1, "kv": 60.0, "power_w": 10.0}
"""Two loads well below the specimen's yield (sim.specimen.yield_force_n, 18 N), one tomogram at each hold."""

DEMO_SECTIONS: dict[str, dict[str, Any]] = {
    "scan": {"darks": 4, "flats": 8, "flats_offset_mm": 0.5},
    "recon": {"online": True, "online_phase_bins": 0},
}
"""Beyond the tiny leg: few darks and flats; online, each tomogram whole and gated (no phase bins: on two
cores the online reconstruction is what makes the study wait)."""

WATCHED_COLUMNS = ["xrm_source_kv", "xrm_source_power", "xrm_source_current", "xrm_physio_rate", "xrm_physio_gate",
                   "xrm_physio_heart_rate"]
FORCE_STREAMS = ("xrm_load_force_monitor", "xrm_load_extension_monitor")


def demo_config(config: Config, out: Path) -> tuple[Config, Path]:
    """The demo's configuration (``config`` with the tiny leg, data under ``out``), written to out/demo.toml."""
    from ..physics.presets import tiny_leg_overrides

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


def source_start_up(xrm, series: dict[str, Any]) -> Generator:
    """Jet start-up and conditioning, the smallest spot, then the high voltage, each run watching the source and
    the mouse."""
    from bluesky import plan_stubs as bps

    watched = [xrm.source, xrm.physio]
    yield from watch_while(xrm.source.warm_up(), watched, 0.5, {"plan_name": "demo_warm_up"})
    yield from bps.mv(xrm.source.spot, SPOT_UM)
    yield from watch_while(xrm.source.set_output(series["kv"], series["power_w"]), watched, 0.25,
                           {"plan_name": "demo_ramp"})


def source_shut_down(xrm) -> Generator:
    """Shutter closed, high voltage off, stage home."""
    from bluesky import plan_stubs as bps

    yield from bps.mv(xrm.source.shutter, "close")
    yield from bps.mv(xrm.source.hv, "Off")
    yield from bps.mv(xrm.rot, 0.0)


def session(xrm, day: float, config: Config) -> Generator:
    """One imaging session of the mouse on ``day``: a gated time series of fly tomograms."""
    from ..plans import time_series

    return (yield from time_series(xrm, subject={**MOUSE, "day": day}, config=config, **SERIES,
                                   md={"demo_session_day": day}))


def loading(xrm, day: float, config: Config) -> Generator:
    """Step-hold-scan at LOADING's loads, the loading cell's force and extension monitored for the curve."""
    from bluesky import preprocessors as bpp

    from ..plans import insitu_loading

    plan = insitu_loading(xrm, subject={**MOUSE, "day": day}, config=config, **LOADING,
                          md={"demo_session_day": day})
    return (yield from bpp.monitor_during_wrapper(plan, [xrm.load.force, xrm.load.extension]))


class RunLog:
    """A RunEngine callback that keeps each run's start document and its events by stream (name -> rows)."""

    def __init__(self) -> None:
        self.starts: dict[str, dict] = {}
        self.streams: dict[str, dict[str, list[tuple[float, dict]]]] = {}
        self._descriptors: dict[str, tuple[str, str]] = {}

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self.starts[doc["uid"]] = doc
            self.streams[doc["uid"]] = {}
        elif name == "descriptor":
            self._descriptors[doc["uid"]] = (doc["run_start"], doc.get("name", "primary"))
        elif name == "event":
            run, stream = self._descriptors[doc["descriptor"]]
            self.streams[run].setdefault(stream, []).append((doc["time"], doc["data"]))

    def runs(self, plan_name: str) -> list[dict]:
        """Start documents of the runs of ``plan_name``, in order."""
        return [start for start in self.starts.values() if start.get("plan_name") == plan_name]


@dataclass
class Acquisition:
    """What the study acquired: per study day its scan's start document and files, and the loading."""

    config: Config
    days: Sequence[float]
    log: RunLog = field(default_factory=RunLog)
    nxtomo: list[Path] = field(default_factory=list)
    online_volumes: list[Path] = field(default_factory=list)
    online_errors: list[str] = field(default_factory=list)

    def nxtomo_of(self, start: dict) -> list[Path]:
        """The run's NXtomo files (their names hold the run uid's first 8 characters)."""
        return [path for path in self.nxtomo if f"_{start['uid'][:8]}_" in path.name]

    def session_start(self, day: float) -> dict:
        return next(s for s in self.log.runs("time_series") if s["subject"]["day"] == day)

    def loading_start(self) -> dict:
        return self.log.runs("insitu_loading")[-1]

    def force_extension(self) -> tuple[np.ndarray, np.ndarray]:
        """The loading cell's extension (mm) and force (N) while loading, paired on the force readings' times."""
        streams = self.log.streams[self.loading_start()["uid"]]
        force, extension = ([(t, next(iter(d.values()))) for t, d in streams.get(name, [])] for name in FORCE_STREAMS)
        if not force or not extension:
            raise RuntimeError("the loading cell's force and extension were not monitored during the loading")
        f_time, f_value = np.array(force).T
        e_time, e_value = np.array(extension).T
        return np.interp(f_time, e_time, e_value), f_value

    def holds(self) -> list[tuple[float, float, float]]:
        """(extension mm, force N, commanded N) at each scan hold."""
        rows = self.log.streams[self.loading_start()["uid"]].get("loading", [])
        commanded = list(LOADING["loads_n"])
        return [(d["xrm_load_extension"], d["xrm_load_force"], commanded[i]) for i, (_, d) in enumerate(rows)
                if i < len(commanded)]


def acquire(config: Config, config_path: Path, days: Sequence[float], port: int, time_scale: float) -> Acquisition:
    """Start the simulator, run the study's plans with the online pipeline and the catalog, stop the simulator."""
    from bluesky import RunEngine
    from bluesky.callbacks import LiveTable
    from ophyd import EpicsSignal

    from ..devices import Instrument
    from ..devices.detector import path_template
    from ..pipeline import NXtomoWriter
    from ..pipeline.catalog import CatalogWriter
    from ..pipeline.streaming import StreamingReconstruction
    from ..scan_cli import FrameProgress
    from ..sim.process import SimProcess

    data_dir = config.paths.data_path
    prefix = config.epics.prefix
    result = Acquisition(config, days)

    def file_written(path: str) -> None:
        result.nxtomo.append(Path(path))
        print(f"  NXtomo file: {path}", flush=True)

    with SimProcess(prefix, port, data_dir=data_dir, time_scale=time_scale, seed=config.sim.seed,
                    config=config_path) as sim:
        print(sim.ready_line, flush=True)
        xrm = Instrument(prefix, name="xrm")
        study_day = EpicsSignal(prefix + "SIM:DAY", name="study_day")
        xrm.wait_for_connection(timeout=30)
        study_day.wait_for_connection(timeout=30)
        xrm.det.hdf1.write_path_template = path_template(data_dir)
        engine = RunEngine({"operator": "demo"})
        engine.subscribe(result.log)
        table = engine.subscribe(LiveTable(WATCHED_COLUMNS, default_prec=2))
        engine.subscribe(NXtomoWriter(on_file_written=file_written))
        catalog = CatalogWriter.from_config(config)
        engine.subscribe(catalog)
        online = StreamingReconstruction(config=config, publish=catalog,
                                         on_volume=lambda path: result.online_volumes.append(Path(path)))
        engine.subscribe(online)
        try:
            print("\n== 1. X-ray source: jet start-up and conditioning, then high voltage; the mouse's vital signs",
                  flush=True)
            engine(source_start_up(xrm, SERIES))
            engine.unsubscribe(table)
            engine.subscribe(FrameProgress())
            for number, day in enumerate(days, start=2):
                print(f"\n== {number}. Session on study day {day:g}: mouse {MOUSE['subject_id']}, "
                      f"{SERIES['tomograms']} respiratory-gated fly tomograms, reconstructed online", flush=True)
                study_day.put(day, wait=True)
                engine(session(xrm, day, config))
            print(f"\n== {len(days) + 2}. In-situ loading on day {days[-1]:g}: step, hold, scan at "
                  f"{', '.join(f'{f:g}' for f in LOADING['loads_n'])} N (below yield)", flush=True)
            engine(loading(xrm, days[-1], config))
            print(f"\n== {len(days) + 3}. Shutter closed, high voltage off, stage home; "
                  "the online reconstruction catches up", flush=True)
            engine(source_shut_down(xrm))
            _catch_up(online, result)
        finally:
            online.close()  # the last volumes are written before the analysis
            catalog.close()
            xrm.destroy()  # disconnect before the IOC goes away
            study_day.destroy()
        result.online_errors = list(online.errors)
        _wait_for_ground_truth(data_dir, days)
    return result


def _catch_up(online, acquisition: Acquisition, timeout_s: float = 600.0) -> None:
    """Wait for the online reconstruction, with a progress bar of the volumes it writes: per tomogram the whole
    one, and with retrospective gating the gated one (phase bins are off in the demo)."""
    import sys

    from tqdm import tqdm

    expected = 0
    for start in acquisition.log.starts.values():
        gated = start.get("scan", {}).get("gating") == "retrospective"
        expected += len(acquisition.nxtomo_of(start)) * (2 if gated else 1)
    with tqdm(total=expected, unit="volume", desc="online reconstruction", file=sys.stderr) as bar:
        deadline = time.monotonic() + timeout_s
        while not online.wait(0.5):
            if len(acquisition.online_volumes) > bar.n:  # only then: an idle bar would redraw every time
                bar.update(len(acquisition.online_volumes) - bar.n)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the online reconstruction did not catch up within {timeout_s:g} s")
        bar.update(len(acquisition.online_volumes) - bar.n)


GROUND_TRUTH_WAIT_S = 600.0
"""The simulator writes each day's ground truth in the background while the camera is idle."""


def _wait_for_ground_truth(data_dir: Path, days: Sequence[float]) -> None:
    """Wait while the simulator runs until it has written the ground truth of every day (it removes unfinished ones
    when it stops)."""
    from ..sim.ioc.camera.ground_truth import ground_truth_name

    deadline = time.monotonic() + GROUND_TRUTH_WAIT_S
    for day in days:
        name = ground_truth_name(day, SERIES["binning"])
        while not list(data_dir.rglob(name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulator wrote no {name} under {data_dir} within {GROUND_TRUTH_WAIT_S:g} s")
            time.sleep(0.5)
