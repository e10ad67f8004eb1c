"""Instrument server figures of issue 14, side by side in one run with the in-process RunEngine.

Starts ``nanoscope serve --sim``'s parts (the tiny leg on the full 2048^2 sensor, as
bench_scans.py, so the camera's timing is the real instrument's) and measures:

* fly-scan efficiency through the queue and with an in-process RunEngine (the same plan,
  the same simulator, the same callbacks: NXtomo writer and catalog writer), from the
  frames' own exposure-start stamps in the camera file; and the time from ``queue start``
  (or the RunEngine call) to the first frame's exposure;
* latency from a document's publication into the 0MQ proxy to its arrival in another
  process (a RemoteDispatcher, JSON), median and p99, for the documents of the scans and
  a burst of recorded scan documents;
* catalog write cost: per run (start, descriptors, stop) and per frame chunk (one
  ``stream_datum`` per data key), written through TiledWriter to the server's Tiled.

Usage: python benchmarks/bench_server.py [--projections 900] [--binning 4] [--exposure 0.005]
Writes benchmarks/results/bench_server.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nanoscope_daq.epics_env import configure_client, free_port

RESULTS = Path(__file__).parent / "results" / "bench_server.json"
MOUSE = {"subject_id": "BENCH", "cohort": "bench", "treatment": "none", "day": 0, "anaesthesia": "isoflurane 2%"}
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

SUBSCRIBER = """
import json, sys, time, asyncio
from bluesky.callbacks.zmq import RemoteDispatcher
from nanoscope_daq.server.documents_socket import deserialize
latencies = []
out = sys.argv[2]
def received(name, doc):
    now = time.time()
    if name == "stop" and doc.get("reason") == "bench-end":
        json.dump(latencies, open(out, "w"))
        raise KeyboardInterrupt
    if "time" in doc and name != "start":
        latencies.append([name, now - doc["time"]])
dispatcher = RemoteDispatcher(sys.argv[1], loop=asyncio.new_event_loop(), deserializer=deserialize)
dispatcher.subscribe(received)
print("subscribed", flush=True)
try:
    dispatcher.start()
except KeyboardInterrupt:
    pass
"""


def frame_stamps(path: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r", swmr=True) as h5:
        return h5["entry/instrument/NDAttributes/NDArrayTimeStamp"][()]


def fly_figures(tomogram: dict, period_s: float, asked_at: float) -> dict:
    """Efficiency during the rotation and from the request, from the camera file's exposure stamps."""
    stamps = frame_stamps(tomogram["file"])
    t = stamps[tomogram["projections_start"]:tomogram["projections_stop"]]
    during = (len(t) - 1) / (t[-1] - t[0])
    return {"projections": len(t), "achieved_fps": during, "efficiency": during * period_s,
            "first_frame_after_request_s": float(stamps[0] - asked_at), "max_frame_gap_s": float(np.diff(t).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projections", type=int, default=900)
    parser.add_argument("--binning", type=int, default=4)
    parser.add_argument("--exposure", type=float, default=0.005)
    parser.add_argument("--burst", type=int, default=2000, help="recorded documents published for the latency")
    args = parser.parse_args()

    ports = [free_port() for _ in range(7)]
    configure_client([ports[0]])
    from bluesky import RunEngine
    from bluesky.callbacks.zmq import Publisher
    from bluesky_queueserver_api import BPlan
    from document_scan import DocumentScan

    from nanoscope_daq.config import load_config, overrides_toml
    from nanoscope_daq.devices import Instrument
    from nanoscope_daq.physics.presets import tiny_leg_overrides
    from nanoscope_daq.pipeline import NXtomoWriter
    from nanoscope_daq.pipeline.catalog import CatalogWriter, table_rows, tiled_writer
    from nanoscope_daq.plans import fly_tomo
    from nanoscope_daq.server.documents_socket import serialize
    from nanoscope_daq.server.queue_client import manager
    from nanoscope_daq.server.serve import InstrumentServer

    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    overrides = tiny_leg_overrides()
    overrides["detector"] = dict(overrides["detector"], pixels_x=2048, pixels_y=2048)
    overrides.update(
        epics={"prefix": "BQ:", "port": ports[0]}, paths={"data_dir": str(work)},
        dose={"ledger_path": str(work / "dose.sqlite"), "budget_gy": 100.0},
        scan={"flats_offset_mm": 0.5, "darks": 10, "flats": 10}, sim={**overrides["sim"], "time_scale": 50.0},
        server={"redis_port": ports[1], "control_port": ports[2], "info_port": ports[3], "documents_in_port": ports[4],
                "documents_out_port": ports[5], "tiled_port": ports[6], "redis_name_prefix": f"bench{ports[1]}",
                "live_analysis": False})
    config_path = work / "bench.toml"
    config_path.write_text(overrides_toml(overrides))
    config = load_config(config_path, environment=False)
    server = InstrumentServer(config, sim=True)
    results: dict = {"machine": platform.node(), "python": platform.python_version(), "args": vars(args)}
    started = time.monotonic()
    server.start()
    results["server_start_s"] = time.monotonic() - started
    config = server.config  # catalog.uri: the server's Tiled
    latency_file = work / "latencies.json"
    subscriber = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, config.server.documents_address.removeprefix(
        "tcp://"), str(latency_file)], stdout=subprocess.PIPE, text=True)
    subscriber.stdout.readline()
    time.sleep(1.0)  # past the 0MQ slow joiner
    try:
        with manager(config, timeout_s=30) as api:
            api.item_add(BPlan("source_on", "xrm"))
            api.queue_start()
            api.wait_for_idle(timeout=300)
            # -- through the queue ---------------------------------------------------------------------------
            api.item_add(BPlan("fly_tomo", "xrm", projections=args.projections, binning=args.binning,
                               exposure_s=args.exposure, subject=MOUSE))
            asked = time.time()
            api.queue_start()
            api.wait_for_idle(timeout=1800)
            (uid,) = api.history_get()["items"][-1]["result"]["run_uids"]
        from nanoscope_daq.pipeline.catalog import open_catalog

        tiled_client = open_catalog(config)
        deadline = time.monotonic() + 120
        while uid not in tiled_client or not tiled_client[uid].metadata.get("stop"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {uid} not in the catalog")
            time.sleep(0.5)
        run = tiled_client[uid]
        (tomogram,) = table_rows(run["tomograms"])
        period = run.metadata["start"]["scan"]["period_s"]
        results["queue"] = fly_figures(tomogram, period, asked)
        results["camera_top_fps"] = 1.0 / period

        # -- in-process RunEngine, same plan and callbacks ----------------------------------------------------
        xrm = Instrument(config.epics.prefix, name="xrm")
        xrm.wait_for_connection(timeout=30)
        RE = RunEngine({}, call_returns_result=True)
        docs: list[tuple[str, dict]] = []
        RE.subscribe(lambda name, doc: docs.append((name, doc)))
        RE.subscribe(NXtomoWriter())
        catalog = CatalogWriter.from_config(config)
        RE.subscribe(catalog)
        asked = time.time()
        RE(fly_tomo(xrm, projections=args.projections, binning=args.binning, exposure_s=args.exposure,
                    subject=MOUSE, config=config))
        flushed = time.monotonic()
        catalog.flush()
        results["in_process_catalog_flush_after_stop_s"] = time.monotonic() - flushed
        names = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "tomograms"}
        (tomogram,) = [d["data"] for n, d in docs if n == "event" and d["descriptor"] in names]
        results["in_process"] = fly_figures(tomogram, period, asked)

        # -- catalog write cost through TiledWriter to the server's Tiled --------------------------------------
        writer = tiled_writer(tiled_client, batch_size=1)
        timings: dict[str, list[float]] = {}

        def timed(name: str, doc: dict) -> None:
            t0 = time.perf_counter()
            writer(name, doc)
            timings.setdefault(name, []).append(time.perf_counter() - t0)

        chunks = 50
        scan = DocumentScan(work, timed, {"plan_name": "bench", "subject": MOUSE}, (64, 64), chunk=4)
        frames = scan.write(np.zeros((4 * chunks, 64, 64), np.uint16), [time.time()] * 4 * chunks,
                            [{"FrameType": 0.0}] * 4 * chunks)
        for lo in range(frames.start, frames.stop, 4):
            t0 = time.perf_counter()
            scan.announce("projections", lo, lo + 4)
            timings.setdefault("chunk", []).append(time.perf_counter() - t0)
        scan.stop()
        per_run = sum(sum(timings[n]) for n in ("start", "descriptor", "stop")) + sum(timings["stream_resource"])
        results["catalog"] = {"per_run_s": per_run, "per_chunk_median_s": float(np.median(timings["chunk"][1:])),
                              "per_chunk_first_s": timings["chunk"][0], "data_keys_per_chunk": 9, "chunks": chunks}

        # -- 0MQ latency: a burst of recorded scan documents, published as the worker publishes them ---------
        publisher = Publisher(f"{config.server.host}:{config.server.documents_in_port}", serializer=serialize)
        recorded: list[tuple[str, dict]] = []
        burst = DocumentScan(work, lambda n, d: recorded.append((n, d)), {"plan_name": "burst"}, (64, 64),
                             name="burst")
        burst.take("projections", np.zeros((8, 64, 64), np.uint16), [time.time()] * 8, [{}] * 8)
        burst.stop()
        events = [doc for name, doc in recorded if name == "descriptor"]
        for i in range(args.burst):
            publisher("descriptor", {**events[i % len(events)], "time": time.time()})
            time.sleep(0.001)
        publisher("stop", {"time": time.time(), "reason": "bench-end", "uid": "bench", "run_start": "bench",
                           "exit_status": "success"})
        subscriber.wait(60)
        latencies = json.loads(latency_file.read_text())
        scan_docs = [lat for name, lat in latencies[:-args.burst]]
        burst_docs = [lat for name, lat in latencies[-args.burst:]]
        results["zmq_latency"] = {
            "scan_documents": len(scan_docs),
            "scan_median_ms": 1e3 * float(np.median(scan_docs)),
            "scan_p99_ms": 1e3 * float(np.percentile(scan_docs, 99)),
            "burst_documents": len(burst_docs), "burst_median_ms": 1e3 * float(np.median(burst_docs)),
            "burst_p99_ms": 1e3 * float(np.percentile(burst_docs, 99)),
        }
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
        server.stop()

    q, p = results["queue"], results["in_process"]
    print(f"server start (sim, Redis, Tiled, 0MQ proxy, RE Manager, environment open): "
          f"{results['server_start_s']:.1f} s")
    print(f"fly tomogram, {q['projections']} projections, camera top rate {results['camera_top_fps']:.2f} fps")
    print(f"  through the queue    {q['achieved_fps']:8.2f} fps  efficiency {q['efficiency']:.4f}  "
          f"first frame {q['first_frame_after_request_s']:.2f} s after queue start")
    print(f"  in-process RunEngine {p['achieved_fps']:8.2f} fps  efficiency {p['efficiency']:.4f}  "
          f"first frame {p['first_frame_after_request_s']:.2f} s after RE(plan)")
    print(f"  queue / in-process efficiency: {q['efficiency'] / p['efficiency']:.4f}")
    c = results["catalog"]
    print(f"catalog (TiledWriter -> Tiled over HTTP): {c['per_run_s'] * 1e3:.0f} ms per run, "
          f"{c['per_chunk_median_s'] * 1e3:.1f} ms per frame chunk ({c['data_keys_per_chunk']} data keys; "
          f"first chunk {c['per_chunk_first_s'] * 1e3:.0f} ms); in-process flush after the stop document "
          f"{results['in_process_catalog_flush_after_stop_s']:.2f} s")
    z = results["zmq_latency"]
    print(f"0MQ publication -> other process: scan documents ({z['scan_documents']}) median "
          f"{z['scan_median_ms']:.2f} ms p99 {z['scan_p99_ms']:.2f} ms; burst ({z['burst_documents']}) median "
          f"{z['burst_median_ms']:.2f} ms p99 {z['burst_p99_ms']:.2f} ms")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
