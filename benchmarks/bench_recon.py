"""Reconstruction speed and accuracy: this engine (FBP, Fourier) against scikit-image and ASTRA (CPU).

One process, the same sinograms for every method: exact line integrals of the modified
Shepp-Logan phantom (each detector pixel the mean of 4 rays across it), N + 1 detector
columns (odd, so the rotation axis sits on a pixel centre: scikit-image assumes it
there, this engine and ASTRA take it anywhere), angles evenly over 180 deg, a single
N x N slice. Every method uses the unwindowed ramp (Ram-Lak) and linear interpolation
where it interpolates. Accuracy is the RMSE against the phantom averaged over each
output pixel (4 x 4 samples), on the grid the method reconstructs on (scikit-image
centres its grid on pixel N // 2, the others between the two middle pixels), inside
the inscribed circle. Times are the best of ``--repeats`` runs, wall clock, with
``--threads`` torch threads (ASTRA's CPU FBP and scikit-image run on one).

Each size is run twice: on the exact line integrals, and on noisy ones (Poisson counts,
``--counts`` photons per unattenuated pixel, the phantom's attenuation scaled so that
the most attenuated ray transmits e^-2; -log of the counts, scaled back). On the noisy
data the Fourier method is run with and without ``match_fbp_noise``, and both
this engine's methods at every filter window (ASTRA and scikit-image with Ram-Lak).

Usage: python benchmarks/bench_recon.py [--sizes 512 2048] [--counts 2e4] [--repeats 1] [--threads 1]
       [--skip skimage astra]
Writes benchmarks/results/bench_recon.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nanoscope_daq.recon import FILTERS, FilterSpec, ParallelGeometry, VolumeGrid, reconstruct
from nanoscope_daq.recon.phantoms import parallel_sinogram, poisson_line_integrals, rasterise, shepp_logan

RESULTS = Path(__file__).parent / "results" / "bench_recon.json"
ANGLES = {512: 720, 2048: 2048}
MAX_LINE_INTEGRAL = 2.0
"""Attenuation scale of the noisy case: the most attenuated ray transmits e^-2 (13.5 %)."""


def _timed(call: Callable[[], np.ndarray], repeats: int) -> tuple[np.ndarray, float]:
    best, image = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        image = call()
        best = min(best, time.perf_counter() - start)
    return image, best


def _ours(sinogram: np.ndarray, geometry: ParallelGeometry, algorithm: str, width: int = 4,
          window: str = "ram-lak", match_fbp_noise: bool = True) -> Callable[[], np.ndarray]:
    n = geometry.cols - 1
    volume = VolumeGrid((1, n, n), 1.0)
    data = torch.from_numpy(sinogram[:, None].astype(np.float32))

    def run() -> np.ndarray:
        with torch.no_grad():
            return reconstruct(data, geometry, volume, algorithm=algorithm, filter=FilterSpec(window),
                               kernel_width=width, match_fbp_noise=match_fbp_noise).numpy()[0]
    return run


def _skimage(sinogram: np.ndarray, angles_deg: np.ndarray) -> Callable[[], np.ndarray]:
    from skimage.transform import iradon

    n = sinogram.shape[1] - 1
    return lambda: iradon(sinogram.T, theta=angles_deg, output_size=n, filter_name="ramp", interpolation="linear",
                          circle=True)


def _astra(sinogram: np.ndarray, angles_deg: np.ndarray) -> Callable[[], np.ndarray]:
    import astra

    n = sinogram.shape[1] - 1
    volume = astra.create_vol_geom(n, n)
    projections = astra.create_proj_geom("parallel", 1.0, sinogram.shape[1], np.radians(angles_deg))
    projector = astra.create_projector("linear", projections, volume)  # CPU projector
    data = sinogram.astype(np.float32)

    def run() -> np.ndarray:
        sino_id = astra.data2d.create("-sino", projections, data)
        rec_id = astra.data2d.create("-vol", volume)
        config = astra.astra_dict("FBP")  # the CPU FBP ("FBP_CUDA" is the GPU one)
        config.update(ProjectorId=projector, ProjectionDataId=sino_id, ReconstructionDataId=rec_id,
                      FilterType="ram-lak")
        algorithm = astra.algorithm.create(config)
        try:
            astra.algorithm.run(algorithm)
            return astra.data2d.get(rec_id)
        finally:
            astra.algorithm.delete(algorithm)
            astra.data2d.delete([sino_id, rec_id])
    return run


def _methods(sinogram: np.ndarray, geometry: ParallelGeometry, angles_deg: np.ndarray, noisy: bool,
             skip: set[str]) -> list[tuple[str, str, Callable[[], np.ndarray]]]:
    """(name, grid, call) of every method the case runs."""
    methods = [
        ("nanoscope fbp", "between", _ours(sinogram, geometry, "fbp")),
        ("nanoscope fourier", "between", _ours(sinogram, geometry, "fourier")),
        ("nanoscope fourier exact", "between", _ours(sinogram, geometry, "fourier", match_fbp_noise=False)),
        ("nanoscope fourier w6", "between", _ours(sinogram, geometry, "fourier", 6)),
    ]
    if "astra" not in skip:
        methods.append(("astra FBP (CPU)", "between", _astra(sinogram, angles_deg)))
    if "skimage" not in skip:
        methods.append(("skimage iradon", "on_pixel", _skimage(sinogram, angles_deg)))
    if noisy:
        for window in FILTERS[1:]:
            methods += [(f"nanoscope fbp {window}", "between", _ours(sinogram, geometry, "fbp", window=window)),
                        (f"nanoscope fourier {window}", "between",
                         _ours(sinogram, geometry, "fourier", window=window))]
    return methods


def bench(n: int, angles: int, repeats: int, skip: set[str], counts: float | None) -> dict:
    angles_deg = np.linspace(0, 180, angles, endpoint=False)
    geometry = ParallelGeometry(angles_deg, 1, n + 1, 1.0)
    phantom = shepp_logan(0.46 * n, 1.0)
    start = time.perf_counter()
    sinogram = parallel_sinogram(phantom, geometry, subsamples=4)
    sinogram_s = time.perf_counter() - start
    if counts is not None:
        sinogram = poisson_line_integrals(sinogram, counts, MAX_LINE_INTEGRAL / sinogram.max(),
                                          np.random.default_rng(0))
    centre = np.arange(n) - (n - 1) / 2
    inside = np.hypot(*np.meshgrid(centre, centre)) < n / 2 - 1
    truth = {"between": rasterise(phantom, (n, n), 1.0, 4),
             "on_pixel": rasterise(phantom, (n, n), 1.0, 4, centre_mm=(-0.5, -0.5))}
    label = f"{n}x{n} {angles} angles" + (f" {counts:g} counts" if counts else "")
    rows = []
    for name, grid, run in _methods(sinogram, geometry, angles_deg, counts is not None, skip):
        image, seconds = _timed(run, repeats)
        rmse = float(np.sqrt(np.mean((image - truth[grid])[inside] ** 2)))
        rows.append({"method": name, "seconds": round(seconds, 4), "rmse": round(rmse, 5)})
        print(f"  {label}  {name:30s} {seconds:9.3f} s   RMSE {rmse:.5f}", flush=True)
    return {"size": n, "angles": angles, "detector_cols": n + 1, "counts": counts, "sinogram_s": round(sinogram_s, 2),
            "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--angles", type=int, nargs="+", help="angles per size (default: 720 for 512, 2048 for 2048)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for this engine")
    parser.add_argument("--counts", type=float, default=2e4,
                        help="photons per unattenuated pixel of the noisy cases (0: noise-free cases only)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["astra", "skimage"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    angles = args.angles or [ANGLES.get(n, n) for n in args.sizes]
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for module in ("astra", "skimage"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    results = {
        "machine": {**versions, "cpu": platform.processor(), "cores": os.cpu_count(), "torch_threads": args.threads,
                    "load_average_before": list(os.getloadavg())},
        "cases": [bench(n, a, args.repeats, set(args.skip), counts) for n, a in zip(args.sizes, angles)
                  for counts in ([None, args.counts] if args.counts else [None])],
    }
    results["machine"]["load_average_after"] = list(os.getloadavg())
    print(f"\n{'case':>26s}  {'method':30s} {'time s':>9s} {'RMSE':>9s} {'vs ASTRA':>9s}")
    for case in results["cases"]:
        astra_row = next((r for r in case["results"] if r["method"].startswith("astra")), None)
        for row in case["results"]:
            speedup = f"{astra_row['seconds'] / row['seconds']:8.1f}x" if astra_row else "        -"
            label = f"{case['size']}^2 x {case['angles']}" + (f" {case['counts']:g} counts" if case["counts"] else "")
            print(f"{label:>26s}  {row['method']:30s} {row['seconds']:9.3f} {row['rmse']:9.5f} {speedup}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
