"""Sustained Stream capture through the simulated sCMOS camera IOC, and what limits it.

Starts ``nanoscope sim`` on a free loopback port and, per case, captures ``--frames``
frames in HDF1 Stream mode (Compression None, BlockingCallbacks No) while the camera
runs Internal-triggered, then checks and reports:

* frames: ArrayCounter delta = NumCaptured_RBV = frames in the file, DroppedArrays_RBV,
  BufferStalls_RBV, MissedTriggers_RBV and FramesLost_RBV (all must be 0 for no loss);
* sensor fps: from the frames' own exposure-start stamps (NDArrayTimeStamp), i.e. the
  rate the sensor really ran at; delivered fps: frames / (Acquire=1 .. file closed);
  in-file fps: frames / (first exposure start .. the IOC's stamp of NumCaptured_RBV reaching
  the last frame), and the lag of that last frame behind its own read-out (a backlog grows it,
  a camera that keeps pace holds it at a few frame periods, whatever the number of frames);
* the same run's file write rate, and a plain sequential write of the same bytes to the
  same directory (page cache, then with fsync) for comparison;
* CPU of the IOC process and of its render workers (psutil, % of one core) and the
  machine's load average (the host is shared: other loads show up here);
* the render ceiling: frames/s the imaging physics alone delivers with the IOC's
  render workers (no IOC, measured before the simulator starts), for the case's frames.

Each case is preceded by an unmeasured 5-frame capture (render workers start, the
detector's per-binning maps are built; 120 frames for the still stage, so the workers hold
the view at every breathing step): the figures are the sustained ones.

Cases: ``full`` (2048x2048 Mono12 at 40 fps: 3.9 ms exposure + 21 ms readout),
``2x2`` and ``4x4`` at their top rates (Overlap=Yes, exposure = readout), dark frames
(X-rays off: the detector noise model still renders every frame); ``projections``:
full-frame and 4x4 projections of the turning specimen with the source on (a new view
every frame: the exact-physics cost); ``views``: full-frame projections with the stage
still (one view, cached: breathing shift, photon noise and read-out per frame); ``flats``:
full frames with the source on and the specimen moved out of the field (flats_offset_mm along
the flats axis, as the scans take them). Files are
deleted afterwards unless ``--keep``.

Usage: python benchmarks/bench_camera_stream.py [--frames 1000] [--cases full,flats,2x2,4x4,views,projections]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import psutil

from nanoscope_daq.config import load_config
from nanoscope_daq.epics_env import configure_client, free_port
from nanoscope_daq.sim.process import SimProcess

RESULTS = Path(__file__).parent / "results" / "bench_camera_stream.json"
PREFIX = "BENCH:"
TIME_SCALE = 100.0  # source warm-up in ~1 s
BLOCK_BYTES = 8 * 2**20
WARM_UP_FRAMES = 5
STILL_WARM_UP_FRAMES = 120
"""A still stage's warm-up: 3 s at 40 fps, four breaths, so each render worker holds the views of
every step of breathing displacement (imager.Imager.breathing_quantum_mm)."""


@dataclass(frozen=True)
class Case:
    """One capture: binning, exposure, requested period, overlap, X-rays, rotation."""

    name: str
    binning: int
    exposure_s: float
    period_s: float
    overlap: bool
    xrays: bool
    frames: int
    turning: bool = True
    """With X-rays: the stage turns (a new view every frame) or stands still (one cached view)."""
    sample_out: bool = False
    """With X-rays: the specimen moved out of the field (flats, as the scans take them)."""


def cases(selected: list[str], frames: int, projection_frames: int) -> list[Case]:
    config = load_config()
    rows = config.detector.pixels_y
    mono12_row = config.sim.camera.row_time_mono12_us * 1e-6
    readout = {b: rows / b * mono12_row for b in (1, 2, 4)}
    table = {
        "full": [Case("1x1 Mono12 40 fps, darks", 1, 0.0039, 0.025, False, False, frames)],
        "2x2": [Case("2x2 Mono12 top rate, darks", 2, readout[2], readout[2], True, False, frames)],
        "4x4": [Case("4x4 Mono12 top rate, darks", 4, readout[4], readout[4], True, False, frames)],
        "flats": [Case("1x1 Mono12 40 fps, flats", 1, 0.0039, 0.025, False, True, frames, turning=False,
                       sample_out=True)],
        "views": [Case("1x1 projections, stage still (cached view)", 1, 0.0039, 0.025, False, True, frames,
                       turning=False)],
        "projections": [
            Case("1x1 projections, turning", 1, 0.0039, 0.025, False, True, projection_frames),
            Case("4x4 projections, turning", 4, readout[4], readout[4], True, True, 5 * projection_frames),
        ],
    }
    unknown = set(selected) - set(table)
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; choose from {sorted(table)}")
    return [case for name in selected for case in table[name]]


class Pvs:
    """put/get by suffix under the benchmark prefix (pyepics)."""

    def __init__(self, epics) -> None:
        self.epics = epics
        self._pvs: dict[str, object] = {}

    def pv(self, suffix: str):
        if suffix not in self._pvs:
            pv = self.epics.PV(PREFIX + suffix, auto_monitor=False)
            if not pv.wait_for_connection(timeout=10):
                raise RuntimeError(f"{PREFIX}{suffix} did not connect")
            self._pvs[suffix] = pv
        return self._pvs[suffix]

    def put(self, suffix: str, value) -> None:
        self.pv(suffix).put(value, wait=True, timeout=30)

    def get(self, suffix: str, **kwargs):
        return self.pv(suffix).get(use_monitor=False, **kwargs)


def switch_xrays_on(pvs: Pvs) -> None:
    pvs.put("SRC:JET", "On")
    deadline = time.monotonic() + 60
    while pvs.get("SRC:STATE_RBV", as_string=True) != "Ready":
        if time.monotonic() > deadline:
            raise RuntimeError(f"source not Ready: {pvs.get('SRC:MSG', as_string=True)}")
        time.sleep(0.1)
    pvs.put("SRC:KV", 50.0)
    pvs.put("SRC:POWER", 100.0)
    pvs.put("SRC:HV", "On")
    pvs.put("SRC:SHUTTER", "Open")
    time.sleep(1.0)


def process_cpu(process: psutil.Process) -> dict[int, float]:
    cpu = {process.pid: sum(process.cpu_times()[:2])}
    for child in process.children(recursive=True):
        try:
            cpu[child.pid] = sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return cpu


def cpu_split(process: psutil.Process, before: dict[int, float], seconds: float) -> dict[str, float]:
    """CPU % of one core: the IOC process, its render workers, the ground-truth writer."""
    after = process_cpu(process)
    split = {"ioc_process": 0.0, "render_workers": 0.0, "ground_truth_writer": 0.0}
    for pid, total in after.items():
        used = 100.0 * (total - before.get(pid, 0.0)) / seconds
        if pid == process.pid:
            split["ioc_process"] += used
            continue
        try:
            child = psutil.Process(pid)
            if "resource_tracker" in " ".join(child.cmdline()):
                continue
            # the ground-truth writer runs at nice 19, the render workers at the IOC's priority
            split["ground_truth_writer" if child.nice() == 19 else "render_workers"] += used
        except psutil.NoSuchProcess:
            continue
    return {k: round(v, 1) for k, v in split.items()}


def capture(pvs: Pvs, case: Case, directory: Path, sim_pid: int) -> dict:
    """Stream ``case.frames`` frames into one file; returns the figures of the run."""
    bins = f"{case.binning}x{case.binning}"
    for suffix, value in (
        ("CAM:cam1:Acquire", 0), ("CAM:cam1:A3Binning", bins), ("CAM:cam1:PixelEncoding", "Mono12"),
        ("CAM:cam1:Overlap", "Yes" if case.overlap else "No"), ("CAM:cam1:AcquireTime", case.exposure_s),
        ("CAM:cam1:AcquirePeriod", case.period_s), ("CAM:cam1:ImageMode", "Multiple"),
        ("CAM:cam1:NumImages", case.frames), ("CAM:cam1:TriggerMode", "Internal"),
        ("CAM:HDF1:EnableCallbacks", "Enable"), ("CAM:HDF1:BlockingCallbacks", "No"),
        ("CAM:HDF1:Compression", "None"), ("CAM:HDF1:FileWriteMode", "Stream"), ("CAM:HDF1:NumCapture", case.frames),
        ("CAM:HDF1:CreateDirectory", -1), ("CAM:HDF1:FilePath", str(directory)),
        ("CAM:HDF1:FileName", f"bench_{bins}"), ("CAM:HDF1:AutoIncrement", "Yes"),
    ):
        pvs.put(suffix, value)
    counters = ("CAM:HDF1:DroppedArrays_RBV", "CAM:cam1:BufferStalls_RBV", "CAM:cam1:MissedTriggers_RBV",
                "CAM:cam1:FramesLost_RBV")
    before = {suffix: pvs.get(suffix) for suffix in (*counters, "CAM:cam1:ArrayCounter_RBV")}
    pvs.put("CAM:HDF1:Capture", 1)
    path = Path(pvs.get("CAM:HDF1:FullFileName_RBV", as_string=True))
    sim = psutil.Process(sim_pid)
    cpu_before, load_before = process_cpu(sim), os.getloadavg()[0]
    peak_memory_mb = 0.0
    started = time.monotonic()
    pvs.put("CAM:cam1:Acquire", 1)
    busy = 10.0  # s: an IOC writing 320 MB/s on a loaded machine can take over a second to answer
    while pvs.get("CAM:cam1:Acquire_RBV", timeout=busy) == 1 or pvs.get("CAM:HDF1:Capture_RBV", timeout=busy) == 1:
        peak_memory_mb = max(peak_memory_mb, pvs.get("CAM:cam1:PoolUsedMem"))
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    cpu = cpu_split(sim, cpu_before, elapsed)
    num_captured = pvs.pv("CAM:HDF1:NumCaptured_RBV")
    num_captured.get(use_monitor=False)
    last_written = num_captured.timestamp  # the IOC's stamp of the update that counted the last frame written
    with h5py.File(path, "r") as h5:
        in_file = int(h5["entry/data/data"].shape[0])
        starts = h5["entry/instrument/NDAttributes/NDArrayTimeStamp"][:]
        frame_types = h5["entry/instrument/NDAttributes/FrameType"][:]
    size = path.stat().st_size
    readout_s = pvs.get("CAM:cam1:ReadoutTime")
    produced = pvs.get("CAM:cam1:ArrayCounter_RBV") - before["CAM:cam1:ArrayCounter_RBV"]
    return {
        "case": case.name,
        "frames_requested": case.frames,
        "frame_shape": [int(pvs.get("CAM:cam1:ArraySizeY_RBV")), int(pvs.get("CAM:cam1:ArraySizeX_RBV"))],
        "exposure_s": case.exposure_s,
        "period_requested_s": case.period_s,
        "period_rbv_s": pvs.get("CAM:cam1:AcquirePeriod_RBV"),
        "readout_s": readout_s,
        "array_counter_delta": int(produced),
        "num_captured": int(pvs.get("CAM:HDF1:NumCaptured_RBV")),
        "frames_in_file": in_file,
        **{suffix.split(":")[-1].removesuffix("_RBV"): int(pvs.get(suffix) - before[suffix]) for suffix in counters},
        "frame_types": sorted({int(t) for t in frame_types}),
        "sensor_fps": round((len(starts) - 1) / (starts[-1] - starts[0]), 2) if len(starts) > 1 else None,
        "delivered_fps": round(in_file / elapsed, 2),
        "first_exposure_to_last_in_file_fps": round(in_file / (last_written - starts[0]), 2),
        "last_frame_lag_s": round(last_written - (starts[-1] + case.exposure_s + readout_s), 3),
        "elapsed_s": round(elapsed, 2),
        "file_bytes": size,
        "file_write_mb_per_s": round(size / elapsed / 1e6, 1),
        "peak_frame_memory_mb": peak_memory_mb,
        "cpu_percent_of_one_core": cpu,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "path": str(path),
    }


def raw_write_bandwidth(directory: Path, nbytes: int) -> dict:
    """A plain sequential write of ``nbytes`` (8 MiB blocks) into ``directory``."""
    block = np.random.default_rng(0).integers(0, 4096, BLOCK_BYTES // 2, dtype=np.uint16).tobytes()
    path = directory / "raw_write.bin"
    started = time.monotonic()
    with open(path, "wb") as fh:
        written = 0
        while written < nbytes:
            written += fh.write(block[: min(BLOCK_BYTES, nbytes - written)])
        buffered = time.monotonic() - started
        fh.flush()
        os.fsync(fh.fileno())
    synced = time.monotonic() - started
    path.unlink()
    return {
        "bytes": nbytes,
        "page_cache_mb_per_s": round(nbytes / buffered / 1e6, 1),
        "with_fsync_mb_per_s": round(nbytes / synced / 1e6, 1),
    }


def render_ceiling(case: Case, frames: int) -> dict:
    """Frames/s of the imaging physics alone, in the IOC's render workers (no IOC)."""
    from nanoscope_daq.sim.imaging.exposure import Exposure
    from nanoscope_daq.sim.ioc.camera.frames import FrameWindow
    from nanoscope_daq.sim.ioc.camera.pipeline import RENDER_BLOCK_FULL_FRAMES_PER_WORKER
    from nanoscope_daq.sim.ioc.camera.render_workers import RenderWorkers

    config = load_config()
    workers = config.sim.camera.render_workers
    rows, cols = config.detector.pixels_y // case.binning, config.detector.pixels_x // case.binning

    def exposure(index: int) -> Exposure:
        return Exposure(
            angle_deg=0.75 * index if case.turning else 10.0, respiration_mm=0.0,
            sample_offset_mm=(config.scan.flats_offset_mm if case.sample_out else 0.0, 0.0, 0.0),
            force_n=0.0, day=0.0,
            exposure_s=case.exposure_s, kv=50.0, power_w=100.0, spot_um=10.0, xrays_on=case.xrays,
            binning=case.binning,
        )

    async def run() -> float:
        full_frame = config.detector.pixels_x * config.detector.pixels_y * 2
        block = RENDER_BLOCK_FULL_FRAMES_PER_WORKER * workers * full_frame
        pool = RenderWorkers(config, workers=workers, block_bytes=block)
        window = FrameWindow(slice(0, rows), slice(0, cols), drop_bits=4)
        rng = np.random.default_rng(0)
        nbytes = rows * cols * 2
        def render(index: int, rng: np.random.Generator):
            e = exposure(index)
            return pool.render(e, rng, window, nbytes, e.angle_deg if case.xrays and index >= 0 else None)

        await asyncio.gather(*(render(-1 - i, rng) for i in range(workers)))  # start-up: one frame on each worker
        started = time.monotonic()
        await asyncio.gather(*(render(i, rng.spawn(1)[0]) for i in range(frames)))
        rate = frames / (time.monotonic() - started)
        pool.close()
        return rate

    return {"render_workers": workers, "frames": frames, "frames_per_s": round(asyncio.run(run()), 2)}


def print_table(results: list[dict]) -> None:
    header = (f"{'case':30} {'frames':>7} {'in file':>7} {'lost':>5} {'stalls':>6} {'sensor fps':>10} "
              f"{'deliv. fps':>10} {'in-file fps':>11} {'lag s':>6} {'render fps':>10} {'file MB/s':>9} "
              f"{'raw MB/s':>15} {'IOC CPU %':>22}")
    print(header)
    print("-" * len(header))
    for r in results:
        lost = r["DroppedArrays"] + r["FramesLost"] + r["MissedTriggers"]
        raw = f"{r['raw_write']['page_cache_mb_per_s']:.0f}/{r['raw_write']['with_fsync_mb_per_s']:.0f}"
        cpu = r["cpu_percent_of_one_core"]
        cpu_text = f"{cpu['ioc_process']:.0f}+{cpu['render_workers']:.0f}w+{cpu['ground_truth_writer']:.0f}gt"
        print(f"{r['case']:30} {r['frames_requested']:>7} {r['frames_in_file']:>7} {lost:>5} "
              f"{r['BufferStalls']:>6} {r['sensor_fps']!s:>10} {r['delivered_fps']:>10} "
              f"{r['first_exposure_to_last_in_file_fps']:>11} {r['last_frame_lag_s']:>6} "
              f"{r['render_ceiling']['frames_per_s']:>10} {r['file_write_mb_per_s']:>9} {raw:>15} {cpu_text:>22}")
    print("deliv. fps: frames / (Acquire put .. capture done, polled); in-file fps: frames / (first exposure start "
          ".. last frame written, the IOC's stamp); lag: last frame written after its read-out ended")
    print("raw MB/s: page cache / with fsync; IOC CPU: IOC process + render workers + ground-truth writer")


def write_report(benchmark: str, results: list[dict], out: Path) -> None:
    """The results as JSON in ``out``, with the date and the host they were measured on."""
    report = {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"results written to {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames per dark-frame case (default 1000)")
    parser.add_argument("--projection-frames", type=int, default=8, help="full-frame projections (4x4: 5x)")
    parser.add_argument("--cases", default="full,2x2,4x4,projections", help="comma-separated cases")
    parser.add_argument("--data-dir", help="where the files go (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the HDF5 files")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args()
    selected = cases(args.cases.split(","), args.frames, args.projection_frames)
    scan = load_config().scan

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="nanoscope-bench-camera-"))
    port = free_port()
    configure_client([port])  # before pyepics loads libca
    import epics

    # The physics alone first, on an otherwise idle simulator-free machine state.
    ceilings = {case.name: render_ceiling(case, min(case.frames, 40 if case.xrays else 200)) for case in selected}
    results = []
    with SimProcess(PREFIX, port, data_dir=data_dir, time_scale=TIME_SCALE) as sim:
        pvs = Pvs(epics)
        xrays = turning = False
        for case in selected:
            if case.xrays and not xrays:
                switch_xrays_on(pvs)
                pvs.put("ROT.VELO", 30.0)
                xrays = True
            if case.xrays and case.turning and not turning:
                pvs.pv("ROT.VAL").put(36000.0)  # keeps turning through the projection cases
                turning = True
            elif case.xrays and not case.turning and turning:
                pvs.put("ROT.STOP", 1)
                time.sleep(2.0)
                turning = False
            # the specimen out of the field for flats, as the scans move it
            pvs.put(f"{scan.flats_axis.upper()}.VAL", scan.flats_offset_mm if case.sample_out else 0.0)
            directory = data_dir / case.name.split()[0]
            # Warm-up (not measured): render workers start, per-binning detector maps are built.
            still = case.xrays and not case.turning
            warm_up = capture(pvs, replace(case, frames=STILL_WARM_UP_FRAMES if still else WARM_UP_FRAMES), directory,
                              sim.pid)
            Path(warm_up["path"]).unlink()
            result = capture(pvs, case, directory, sim.pid)
            result["raw_write"] = raw_write_bandwidth(directory, result["file_bytes"])
            result["render_ceiling"] = ceilings[case.name]
            if not args.keep:
                Path(result["path"]).unlink()
            results.append(result)
            print(f"done: {case.name}", flush=True)
        if turning:
            pvs.put("ROT.STOP", 1)
    if not args.keep and not args.data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)

    print_table(results)
    write_report("bench_camera_stream", results, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
