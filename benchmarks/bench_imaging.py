"""Render time of the simulated camera's frames, on one core, at full resolution and binned.

For each binning it measures (best and median of several runs, milliseconds):

* ``view_ms``: the first frame at a new angle: the exact projection of the specimen
  (every lacuna, vessel and surface), binned and blurred -- the cost of a frame in a
  scan that never revisits an angle;
* ``frame_ms``: a frame whose view is cached (same angle, day, load, stage, source):
  breathing shift + photon flux + noise + digitisation -- what streaming at a fixed
  angle (alignment, live view, respiratory-gated repeats) costs per frame;
* ``dark_ms`` and ``flat_ms``.

Usage: python benchmarks/bench_imaging.py [--binnings 1 2 4] [--repeats 5] [--zernike] [--ground-truth]
Writes benchmarks/results/bench_imaging.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, as the camera's render thread has

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from nanoscope_daq.config import load_config  # noqa: E402
from nanoscope_daq.sim.imaging.exposure import Exposure  # noqa: E402
from nanoscope_daq.sim.imaging.imager import Imager  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_imaging.json"
FRAME_BUDGET_MS = 25.0


def _exposure(binning: int, angle: float, breath: float = 0.0, offset: float = 0.0, beam: bool = True) -> Exposure:
    return Exposure(angle_deg=angle, sample_offset_mm=(offset, 0.0, 0.0), respiration_mm=breath, force_n=0.0,
                    day=0.0, exposure_s=0.02, kv=70.0, power_w=100.0, spot_um=10.0, xrays_on=beam, binning=binning)


def _timed(call, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return {"best": round(min(times), 2), "median": round(statistics.median(times), 2)}


def bench(imager: Imager, binning: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    angles = iter(np.linspace(0.0, 180.0, 4 * repeats + 7))
    imager.render(_exposure(binning, next(angles)), rng)  # warm: spectra, flux and detector maps
    view = _timed(lambda: imager.render(_exposure(binning, next(angles)), rng), repeats)
    fixed = next(angles)
    imager.render(_exposure(binning, fixed), rng)
    breaths = iter(np.linspace(0.0, 0.05, 4 * repeats + 3))
    frame = _timed(lambda: imager.render(_exposure(binning, fixed, next(breaths)), rng), 3 * repeats)
    dark = _timed(lambda: imager.render(_exposure(binning, fixed, beam=False), rng), 3 * repeats)
    flat = _timed(lambda: imager.render(_exposure(binning, fixed, offset=10.0), rng), 3 * repeats)
    shape = imager.frame_shape(binning)
    return {"binning": binning, "shape": list(shape), "view_ms": view, "frame_ms": frame, "dark_ms": dark,
            "flat_ms": flat, "frame_within_budget": frame["median"] <= FRAME_BUDGET_MS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binnings", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--zernike", action="store_true", help="also time the TXM with the Zernike ring")
    parser.add_argument("--ground-truth", action="store_true", help="also time ground_truth.h5 at binning 8")
    args = parser.parse_args()
    config = load_config()
    imager = Imager(config)
    start = time.perf_counter()
    _ = imager.phantom
    results = {
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpu": platform.processor(),
                    "cores": os.cpu_count(), "load_average": list(os.getloadavg())},
        "config": {"geometry": config.geometry.kind, "contrast": config.geometry.contrast,
                   "detector": f"{config.detector.pixels_x}x{config.detector.pixels_y}",
                   "projection_supersampling": config.sim.detector.projection_supersampling,
                   "lacunae": int(len(imager.phantom.lacunae.ellipsoids))},
        "phantom_build_s": round(time.perf_counter() - start, 2),
        "frame_budget_ms": FRAME_BUDGET_MS,
        "cone_absorption": [bench(imager, b, args.repeats) for b in args.binnings],
    }
    if args.zernike:
        txm = Imager(config.replace(geometry={"kind": "parallel", "contrast": "zernike"}))
        results["txm_zernike"] = [bench(txm, b, max(2, args.repeats // 2)) for b in args.binnings if b >= 2]
    if args.ground_truth:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            imager.write_ground_truth(Path(folder) / "ground_truth.h5", 0.0, 8)
            results["ground_truth_binning8_s"] = round(time.perf_counter() - start, 1)
    results["machine"]["load_average_after"] = list(os.getloadavg())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for key in ("cone_absorption", "txm_zernike"):
        for row in results.get(key, []):
            print(f"{key:16s} {row['shape'][0]:5d}x{row['shape'][1]:<5d} new view {row['view_ms']['median']:8.1f} ms"
                  f"   cached frame {row['frame_ms']['median']:7.1f} ms   dark {row['dark_ms']['median']:6.1f} ms"
                  f"   flat {row['flat_ms']['median']:6.1f} ms")
    if "ground_truth_binning8_s" in results:
        print(f"ground_truth.h5 at binning 8: {results['ground_truth_binning8_s']} s")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
