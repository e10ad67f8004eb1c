"""Scan figures of issue 4: fly-scan efficiency, dead time between tomograms, dose per tomogram.

Runs the real plans against ``nanoscope sim`` (the tiny leg on the full 2048^2 sensor,
so the camera's timing is that of the real instrument while the simulator renders
fast enough) and measures from the frames' own exposure-start stamps in the camera file:

* fly efficiency: projections per second achieved / the camera's top rate (1 / its
  shortest frame period at the scan's exposure and binning), during the rotation, and
  over the whole tomogram from kickoff (run-up included);
* dead time between consecutive tomograms of a time series (back to back, continuous
  rotation and back-and-forth): first frame of one minus last frame of the previous,
  minus one frame period;
* the dose the plans estimate per tomogram for their default protocols, and the dose
  measured from the shutter's open time.

With ``--leg-series N`` it measures instead how fast the simulator delivers a real-sized
scan: a time series of 3 fly tomograms of N projections each over 360 degrees (continuous
rotation: every tomogram at the same angles) of the full-size leg at 4x4 binning (512^2),
from the first trigger to each tomogram's last projection in the file (HDF1:NumCaptured_RBV
monitored: the IOC's time stamp of the update that counted it written, and when the client saw
that update; exposure starts from the frames' own stamps), against the acquisition time. The
first tomogram renders every view exactly; the later ones find them in the view cache. The
simulator writes no ground-truth volume here (it would take a core for minutes alongside).
With ``--prepare`` the views of the scan's angle grid are rendered first, a one-off
preparation (``<P>SIM:PREPARE_VIEWS``, timed separately) with the source at the scan's kV
and power; the first tomogram then finds its views too. The rotation runs at ``--period-ms``
per projection in both cases, so the mid-exposure angles prepared are known.

Usage: python benchmarks/bench_scans.py [--projections 900] [--binning 4] [--tomograms 3]
       [--leg-series N [--prepare] [--period-ms 5.4]]
Writes benchmarks/results/bench_scans.json (bench_scans_leg_series[_prepared].json for --leg-series).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from nanoscope_daq.epics_env import configure_client, free_port

RESULTS = Path(__file__).parent / "results" / "bench_scans.json"
MOUSE = {"subject_id": "BENCH", "cohort": "bench", "treatment": "none", "day": 0, "anaesthesia": "isoflurane 2%"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projections", type=int, default=900)
    parser.add_argument("--series-projections", type=int, default=360)
    parser.add_argument("--binning", type=int, default=4)
    parser.add_argument("--exposure", type=float, default=0.005)
    parser.add_argument("--tomograms", type=int, default=3)
    parser.add_argument("--leg-series", type=int, default=0, metavar="N",
                        help="only the full-size leg time series, N projections per tomogram")
    parser.add_argument("--prepare", action="store_true",
                        help="with --leg-series: render the scan's views first (SIM:PREPARE_VIEWS), timed apart")
    parser.add_argument("--period-ms", type=float, default=5.4,
                        help="with --leg-series: rotation of one angle step per this period (ms)")
    args = parser.parse_args()
    if args.leg_series:
        leg_series(args)
        return

    port = free_port()
    configure_client([port])
    import h5py
    import numpy as np
    from bluesky import RunEngine

    from nanoscope_daq.config import load_config, overrides_toml
    from nanoscope_daq.devices import Instrument
    from nanoscope_daq.physics.presets import tiny_leg_overrides
    from nanoscope_daq.plans import fly_tomo, time_series
    from nanoscope_daq.sim.process import SimProcess

    work = Path(tempfile.mkdtemp(prefix="bench-scans-"))
    overrides = tiny_leg_overrides()
    overrides["detector"] = dict(overrides["detector"], pixels_x=2048, pixels_y=2048)
    overrides.update(paths={"data_dir": str(work)}, dose={"ledger_path": str(work / "dose.sqlite")},
                     scan={"flats_offset_mm": 0.5, "darks": 10, "flats": 10})
    config_path = work / "bench.toml"
    config_path.write_text(overrides_toml(overrides))
    config = load_config(config_path)
    sim = SimProcess("BS:", port, data_dir=work, time_scale=50.0, config=config_path).start()
    results: dict = {"machine": platform.node(), "python": platform.python_version(), "args": vars(args)}
    try:
        xrm = Instrument("BS:", name="xrm")
        xrm.wait_for_connection(timeout=30)
        xrm.source.warm_up().wait(120)
        RE = RunEngine({}, call_returns_result=True)
        docs: list[tuple[str, dict]] = []
        RE.subscribe(lambda name, doc: docs.append((name, doc)))

        def tomograms() -> list[dict]:
            names = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "tomograms"}
            return [d["data"] for n, d in docs if n == "event" and d["descriptor"] in names]

        def start_doc() -> dict:
            return next(d for n, d in docs if n == "start")

        def stamps(event: dict) -> np.ndarray:
            with h5py.File(event["file"], "r") as h5:
                times = h5["entry/instrument/NDAttributes/NDArrayTimeStamp"][()]
            return times[event["projections_start"]:event["projections_stop"]]

        # -- one fly tomogram, default protocol ------------------------------------------
        docs.clear()
        wall = time.monotonic()
        RE(fly_tomo(xrm, projections=args.projections, binning=args.binning, exposure_s=args.exposure,
                    subject=MOUSE, config=config))
        wall = time.monotonic() - wall
        (event,) = tomograms()
        start = start_doc()
        t = stamps(event)
        period = start["scan"]["period_s"]
        top_fps = 1.0 / period
        during = (len(t) - 1) / (t[-1] - t[0])
        from_kickoff = len(t) / (t[-1] + period - event["start_time"])
        results["fly"] = {
            "projections": len(t), "frame_shape": [start["geometry"]["rows"], start["geometry"]["cols"]],
            "exposure_s": args.exposure, "camera_top_fps": top_fps, "velocity_deg_s": start["scan"]["velocity_deg_s"],
            "achieved_fps": during, "efficiency": during / top_fps,
            "fps_from_kickoff": from_kickoff, "efficiency_from_kickoff": from_kickoff / top_fps,
            "max_frame_gap_s": float(np.diff(t).max()), "plan_wall_s": wall,
            "dose_estimate_gy": start["dose"]["per_tomogram_gy"],
        }

        # -- time series: dead time between tomograms ------------------------------------
        for rotation in ("continuous", "back-and-forth"):
            docs.clear()
            RE(time_series(xrm, subject=MOUSE, tomograms=args.tomograms, rotation=rotation,
                           projections=args.series_projections, binning=args.binning, exposure_s=args.exposure,
                           config=config.replace(dose={"budget_gy": 100.0})))
            events = tomograms()
            series_stamps = [stamps(e) for e in events]
            series_period = start_doc()["scan"]["period_s"]
            dead = [b[0] - a[-1] - series_period for a, b in zip(series_stamps, series_stamps[1:])]
            results[f"series_{rotation}"] = {
                "tomograms": len(events), "projections": args.series_projections,
                "dead_time_s": [float(d) for d in dead], "max_dead_time_s": float(max(dead)),
                "dose_estimate_per_tomogram_gy": start_doc()["dose"]["per_tomogram_gy"],
            }
        from nanoscope_daq.plans.dose import DoseLedger

        ledger = DoseLedger(config.dose.ledger)
        results["dose_measured_total_gy"] = ledger.delivered_gy(MOUSE["subject_id"])
    finally:
        sim.stop()

    fly = results["fly"]
    print(f"fly tomogram: {fly['projections']} projections of {fly['frame_shape'][0]}x{fly['frame_shape'][1]} at "
          f"{fly['exposure_s'] * 1e3:g} ms, {fly['velocity_deg_s']:.2f} deg/s")
    print(f"  camera top rate       {fly['camera_top_fps']:8.2f} fps")
    print(f"  achieved (rotation)   {fly['achieved_fps']:8.2f} fps   efficiency {fly['efficiency']:.4f}")
    print(f"  achieved (kickoff on) {fly['fps_from_kickoff']:8.2f} fps   "
          f"efficiency {fly['efficiency_from_kickoff']:.4f}")
    print(f"  largest frame gap     {fly['max_frame_gap_s'] * 1e3:8.2f} ms;  plan wall time {fly['plan_wall_s']:.1f} s")
    print(f"  dose estimate         {fly['dose_estimate_gy'] * 1e3:8.1f} mGy per tomogram")
    for rotation in ("continuous", "back-and-forth"):
        series = results[f"series_{rotation}"]
        print(f"time series ({rotation}, {series['tomograms']} x {series['projections']}): dead time "
              + ", ".join(f"{d:.3f} s" for d in series["dead_time_s"])
              + f"; dose estimate {series['dose_estimate_per_tomogram_gy'] * 1e3:.1f} mGy per tomogram")
    print(f"dose measured from the shutter, all scans above: {results['dose_measured_total_gy'] * 1e3:.1f} mGy")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


def xrm_views_rendered(xrm) -> int:
    """Views the simulator has rendered exactly so far (SIM:VIEWS_RENDERED)."""
    import epics

    return int(epics.caget(xrm.prefix + "SIM:VIEWS_RENDERED", timeout=10))


def prepare_views(RE, xrm, step_deg: float, velocity: float, args: argparse.Namespace) -> float:
    """Source at the scan's kV and power, then the scan's mid-exposure views rendered; returns the seconds taken."""
    import epics

    from nanoscope_daq.plans import source_on

    RE(source_on(xrm, kv=60.0, power_w=10.0))  # time_series' defaults
    sim = xrm.prefix + "SIM:"
    for suffix, value in (("VIEWS_START", velocity * args.exposure / 2), ("VIEWS_STEP", step_deg),
                          ("VIEWS_COUNT", args.leg_series), ("VIEWS_BINNING", 4)):
        epics.caput(sim + suffix, value, wait=True, timeout=10)
    started = time.monotonic()
    epics.caput(sim + "PREPARE_VIEWS", 1, wait=True, timeout=3600)
    seconds = time.monotonic() - started
    print(f"prepared {epics.caget(sim + 'VIEWS_READY')} views ({xrm_views_rendered(xrm)} rendered so far) in "
          f"{seconds:.1f} s")
    return seconds


def leg_series(args: argparse.Namespace) -> None:
    """A time series of the full-size leg, ``args.leg_series`` projections over 360 degrees each: delivery
    against acquisition."""
    port = free_port()
    configure_client([port])
    import h5py
    import numpy as np
    from bluesky import RunEngine

    from nanoscope_daq.config import load_config, overrides_toml
    from nanoscope_daq.devices import Instrument
    from nanoscope_daq.plans import time_series
    from nanoscope_daq.sim.process import SimProcess

    work = Path(tempfile.mkdtemp(prefix="bench-leg-series-"))
    config_path = work / "bench.toml"
    config_path.write_text(overrides_toml({
        "paths": {"data_dir": str(work)}, "dose": {"ledger_path": str(work / "dose.sqlite"), "budget_gy": 100.0},
        "scan": {"darks": 10, "flats": 10},
        "sim": {"camera": {"ground_truth_max_voxels": 1}},  # the 4x4 volume costs minutes of a core: not measured
    }))
    config = load_config(config_path)
    sim = SimProcess("BL:", port, data_dir=work, time_scale=50.0, config=config_path).start()
    captured: list[tuple[float, float, int]] = []
    """(client's time of arrival, the IOC's time stamp of the update, NumCaptured_RBV) per monitor update."""
    try:
        xrm = Instrument("BL:", name="xrm")
        xrm.wait_for_connection(timeout=30)
        xrm.source.warm_up().wait(120)
        xrm.det.hdf1.num_captured.subscribe(
            lambda value, timestamp, **_: captured.append((time.time(), timestamp, int(value))))
        RE = RunEngine({}, call_returns_result=True)
        step = 360.0 / args.leg_series
        velocity = step / (args.period_ms * 1e-3)
        preparation_s = prepare_views(RE, xrm, step, velocity, args) if args.prepare else None
        wall = time.monotonic()
        failure = None
        try:
            RE(time_series(xrm, subject=MOUSE, tomograms=args.tomograms, rotation="continuous", range_deg=360.0,
                           projections=args.leg_series, binning=4, exposure_s=args.exposure, velocity=velocity,
                           config=config))
        except Exception as exc:  # noqa: BLE001 -- reported below; the file holds what was measured
            failure = f"{type(exc).__name__}: {exc}"
        wall = time.monotonic() - wall
        time.sleep(1.0)  # SIM:VIEWS_RENDERED is updated every 0.5 s
        views_rendered = int(xrm_views_rendered(xrm))
    finally:
        sim.stop()
    (path,) = work.rglob("time_series_*.h5")
    with h5py.File(path, "r") as h5:
        attributes = h5["entry/instrument/NDAttributes"]
        stamps, kinds = attributes["NDArrayTimeStamp"][()], attributes["FrameType"][()]
    projections = np.flatnonzero(kinds == 0)
    period = float(np.median(np.diff(stamps[projections])))
    arrived, written, counts = (np.array(column) for column in zip(*captured))

    def in_file(frames: int, clock: np.ndarray) -> float:
        """When NumCaptured_RBV first reached ``frames``: the IOC's stamp (written) or the client's arrival."""
        return float(clock[np.argmax(counts >= frames)])

    rows = []
    for k, indices in enumerate(np.array_split(projections, len(projections) // args.leg_series)):
        acquired = stamps[indices[-1]] + period  # exposure end of its last projection
        last = in_file(indices[-1] + 1, written)
        rows.append({"tomogram": k, "projections": len(indices),
                     "acquisition_s": float(acquired - stamps[indices[0]]),
                     "first_trigger_to_last_in_file_s": last - stamps[indices[0]],
                     "lag_after_acquisition_s": last - acquired,
                     "client_saw_last_after_s": in_file(indices[-1] + 1, arrived) - stamps[indices[0]]})
    first_trigger = stamps[projections[0]]
    series_acquisition = stamps[projections[-1]] + period - first_trigger
    series_in_file = in_file(projections[-1] + 1, written) - first_trigger
    results = {"machine": platform.node(), "args": vars(args), "period_s": period, "plan_wall_s": wall,
               "preparation_s": preparation_s,
               "plan_failure": failure, "tomograms": rows, "series_acquisition_s": float(series_acquisition),
               "series_first_trigger_to_last_in_file_s": series_in_file,
               "series_client_saw_last_after_s": in_file(projections[-1] + 1, arrived) - first_trigger}
    print(f"full-size leg, {len(rows)} x {args.leg_series} projections over 360 deg, 512^2, "
          f"period {period * 1e3:.2f} ms" + (f"; views prepared in {preparation_s:.1f} s" if args.prepare else ""))
    for row in rows:
        print(f"  tomogram {row['tomogram']}: acquisition {row['acquisition_s']:7.2f} s, first trigger -> last in "
              f"file {row['first_trigger_to_last_in_file_s']:7.2f} s (lag {row['lag_after_acquisition_s']:.2f} s; "
              f"the client saw it at {row['client_saw_last_after_s']:.2f} s)")
    results["views_rendered"] = views_rendered
    print(f"  views rendered by the simulator: {views_rendered}")
    print(f"  series: acquisition {series_acquisition:.2f} s, first trigger -> last frame in file "
          f"{series_in_file:.2f} s ({100 * (series_in_file / series_acquisition - 1):+.1f} %; the client saw it at "
          f"{results['series_client_saw_last_after_s']:.2f} s); plan wall {wall:.1f} s"
          + (f"; plan failed: {failure}" if failure else ""))
    out = RESULTS.with_name("bench_scans_leg_series" + ("_prepared" if args.prepare else "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
