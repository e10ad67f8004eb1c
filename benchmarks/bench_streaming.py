"""Online reconstruction at camera speed: does the streaming callback keep pace with 40 fps at 256^3?

A camera file is written frame by frame at 40 fps (the simulator's HDF5 writer) with
exact projections of the 3D Shepp-Logan phantom (Poisson noise) -- parallel beam over
180 deg, or with ``--geometry cone`` the lab instrument's cone beam over 360 deg (source
25 mm and detector 125 mm from the axis, a 2048-pixel detector binned 8x: 5.1 deg half
fan), FDK online -- and the
documents of docs/documents.md are emitted as the capture device does: frames announced
about once a second. StreamingReconstruction reconstructs them into a 256 x 256 x 256
volume. Reported per configuration: worker busy fraction (busy time / acquisition
time: below 1 keeps pace), the CPU seconds of the whole process from the first frame to
the last volume (every thread, the camera writer's included) as a fraction of two cores
over the acquisition (the load other processes put on the machine inflates the busy
fraction, not this), the largest backlog of announced frames not yet
reconstructed, the time from the last frame's announcement to the finished volume,
peak memory above the process's baseline, and the volume's RMSE against the phantom.

    .venv/bin/python benchmarks/bench_streaming.py [--projections 720] [--fps 40] [--threads 2]
                                                   [--geometry parallel|cone]

Writes benchmarks/results/bench_streaming.json (bench_streaming_cone.json with --geometry cone).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from nanoscope_daq.config import load_config
from nanoscope_daq.pipeline.frame_ranges import FrameRange
from nanoscope_daq.pipeline.streaming import StreamingReconstruction
from nanoscope_daq.recon import ConeGeometry, ParallelGeometry
from nanoscope_daq.recon.phantoms import project_ellipsoids, rasterise_ellipsoids, shepp_logan_3d

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test helper DocumentScan
from document_scan import DocumentScan  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_streaming.json"
SIZE = 256
PIXEL_UM, MAGNIFICATION = 11.0, 20.0
CONE_PIXEL_UM, SOURCE_SAMPLE_MM, SOURCE_DETECTOR_MM = 88.0, 25.0, 125.0
"""The cone-beam case: the instrument's 11 um pixels binned 8x, its source and detector distances."""
OPEN_BEAM, DARK = 20000.0, 100.0


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """Samples the resident set every 10 ms in a thread; ``peak`` above the baseline taken at start (MB)."""

    def __init__(self) -> None:
        self.baseline = rss_mb()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak - self.baseline


def counts(line_integrals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.poisson(OPEN_BEAM * np.exp(-line_integrals)) + DARK, 0, 65535).astype(np.uint16)


def stream(projections: np.ndarray, angles: np.ndarray, turns: int, fps: float, algorithm: str, folder: Path,
           truth: np.ndarray, geometry: dict, range_deg: float) -> dict:
    """One scan streamed to the callback; the figures of that configuration (``geometry``: the start document's)."""
    config = load_config()
    config = dataclasses.replace(config, recon=dataclasses.replace(config.recon, online_algorithm=algorithm,
                                                                   online_max_pixels=SIZE))
    published: list[tuple[float, str, dict]] = []
    callback = StreamingReconstruction(config=config,
                                       publish=lambda name, doc: published.append((time.monotonic(), name, doc)))
    count = len(angles)
    metadata = {"plan_name": "fly_tomo", "scan": {"start_deg": 0.0, "range_deg": range_deg, "projections": count},
                "geometry": geometry}
    rng = np.random.default_rng(1)
    scan = DocumentScan(folder, callback, metadata, (SIZE, SIZE), name=f"{algorithm}_{turns}", chunk=10)
    now = time.time()
    calibration = {"darks": (np.full((10, SIZE, SIZE), DARK, np.uint16), 0.0),
                   "flats": (counts(np.zeros((10, SIZE, SIZE)), rng), 0.2)}
    taken = {}
    for stream_name, (pixels, current) in calibration.items():
        taken[stream_name] = scan.take(stream_name, pixels, [now] * 10,
                                       [{"SourceCurrent": current, "FrameType": 2.0 if current == 0 else 1.0}] * 10)
    memory = PeakMemory()
    cpu_started = time.process_time()
    period, per_announcement = 1.0 / fps, int(round(fps))
    backlog, started, announced, first = 0, time.monotonic(), 0, scan.frames
    total = count * turns
    for turn in range(turns):
        for lo in range(0, count, per_announcement):
            hi = min(lo + per_announcement, count)
            views = projections[lo:hi] if turn % 2 == 0 else projections[lo:hi, :, ::-1]  # theta + 180: mirrored
            frames = scan.write(views, [now + (turn * count + i) * period for i in range(lo, hi)],
                                [{"RotationAngle": range_deg * turn + a, "EncoderAngle": range_deg * turn + a,
                                  "SourceCurrent": 0.2} for a in angles[lo:hi]])
            due = started + (frames.stop - first) * period
            time.sleep(max(0.0, due - time.monotonic()))  # the camera exposes at fps; the capture announces
            scan.announce("projections", frames.start, frames.stop)
            announced = frames.stop - first
            backlog = max(backlog, callback.frames_waiting())
    last_announced = time.monotonic()
    for turn in range(turns):
        start = first + turn * count
        scan.tomogram(turn, darks=taken["darks"], flats_before=taken["flats"], flats_after=None,
                      projections=FrameRange(start, start + count),
                      grid=(range_deg * turn, range_deg / count, count))
    scan.stop()
    callback.wait()
    callback.close()
    cpu_s = time.process_time() - cpu_started
    peak = memory.stop()
    volumes = [(t, doc["data"]) for t, name, doc in published if name == "event" and "volume_file" in doc["data"]]
    finished, last = volumes[-1]
    with h5py.File(last["volume_file"]) as h5:
        volume = h5["volume"][()]
    acquisition = total * period
    return {
        "geometry": geometry["type"], "algorithm": "fdk" if geometry["type"] == "cone" else algorithm,
        "volume": [SIZE] * 3, "projections_per_tomogram": count, "tomograms": turns,
        "fps": fps, "acquisition_s": round(acquisition, 2), "frames_announced": announced,
        "worker_busy_s": round(callback.busy_s, 2), "busy_fraction": round(callback.busy_s / acquisition, 3),
        "process_cpu_s": round(cpu_s, 2), "cpu_fraction_of_2_cores": round(cpu_s / (2 * acquisition), 3),
        "max_backlog_frames": backlog,
        "volume_after_last_announcement_s": round(finished - last_announced, 3),
        "peak_memory_mb": round(peak, 1),
        "rmse_per_mm": float(np.sqrt(np.mean((volume - truth) ** 2))),
        "live_slice_events": sum(1 for _, name, doc in published if name == "event" and "xy" in doc["data"]
                                 and "volume_file" not in doc["data"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projections", type=int, default=720)
    parser.add_argument("--fps", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--algorithms", default="fourier,fbp", help="parallel beam: the online algorithms run")
    parser.add_argument("--geometry", choices=("parallel", "cone"), default="parallel")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.geometry == "cone":
        range_deg, algorithms = 360.0, ["fdk"]
        angles = np.arange(args.projections) * range_deg / args.projections
        geometry = ConeGeometry(angles, SIZE, SIZE, CONE_PIXEL_UM * 1e-3, SOURCE_SAMPLE_MM, SOURCE_DETECTOR_MM)
        pixel_mm = geometry.sample_pixel_mm
        start_geometry = {"type": "cone", "detector_pixel_um": CONE_PIXEL_UM, "source_sample_mm": SOURCE_SAMPLE_MM,
                          "source_detector_mm": SOURCE_DETECTOR_MM, "rows": SIZE, "cols": SIZE}
    else:
        range_deg, algorithms = 180.0, args.algorithms.split(",")
        pixel_mm = PIXEL_UM * 1e-3 / MAGNIFICATION
        angles = np.arange(args.projections) * range_deg / args.projections
        geometry = ParallelGeometry(angles, SIZE, SIZE, pixel_mm)
        start_geometry = {"type": "parallel", "detector_pixel_um": PIXEL_UM, "magnification": MAGNIFICATION,
                          "rows": SIZE, "cols": SIZE}
    phantom = shepp_logan_3d(0.45 * SIZE * pixel_mm, value_per_mm=20.0)
    started = time.perf_counter()
    projections = counts(project_ellipsoids(phantom, geometry), np.random.default_rng(0))
    truth = rasterise_ellipsoids(phantom, geometry.default_volume())
    print(f"phantom projections {projections.shape} in {time.perf_counter() - started:.1f} s")
    results = {"threads": args.threads, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        for algorithm in algorithms:
            for turns in ((1, 2) if algorithm == "fourier" else (1,)):
                run = stream(projections, angles, turns, args.fps, algorithm, Path(folder), truth, start_geometry,
                             range_deg)
                results["runs"].append(run)
                print(json.dumps(run))
    out = RESULTS.with_name("bench_streaming_cone.json") if args.geometry == "cone" else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
