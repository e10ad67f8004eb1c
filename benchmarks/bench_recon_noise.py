"""Noise power spectrum of FBP and of the Fourier method (with and without the noise match) on white noise.

A sinogram of unit white Gaussian noise (``--size`` + 1 columns, ``--angles`` over
180 deg, ``--slices`` independent slices) is reconstructed with Ram-Lak by each method;
the NPS is |FFT|^2 of the central half of each slice (mean removed), averaged over the
slices and over rings of radial frequency. Prints the variance of each method and the
NPS ratio against the prediction (2 + cos 2 pi f) / 3 (linear interpolation's noise
power transfer, docs/recon.md "Noise").

Usage: python benchmarks/bench_recon_noise.py [--size 512] [--angles 720] [--slices 4]
Writes benchmarks/results/bench_recon_noise.json.
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from nanoscope_daq.recon import ParallelGeometry, VolumeGrid, reconstruct
from nanoscope_daq.recon.filters import linear_interpolation_power

RESULTS = Path(__file__).parent / "results" / "bench_recon_noise.json"
METHODS = {"fbp": ("fbp", True), "fourier": ("fourier", True), "fourier exact": ("fourier", False)}


def radial_nps(images: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Mean |FFT|^2 / pixels of the (slices, m, m) images in rings between ``bins`` (cycles per pixel)."""
    m = images.shape[-1]
    spectrum = np.abs(np.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True))) ** 2
    nps = spectrum.mean(axis=0) / m**2
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(m), np.fft.fftfreq(m)))
    return np.array([nps[(frequency >= lo) & (frequency < hi)].mean() for lo, hi in pairwise(bins)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--angles", type=int, default=720)
    parser.add_argument("--slices", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.size
    geometry = ParallelGeometry(np.linspace(0, 180, args.angles, endpoint=False), args.slices, n + 1, 1.0)
    volume = VolumeGrid((args.slices, n, n), 1.0)
    noise = np.random.default_rng(1).standard_normal((args.angles, args.slices, n + 1)).astype(np.float32)
    centre = slice(n // 4, n // 4 + n // 2)
    bins = np.linspace(0, 0.5, 11)
    variance, nps = {}, {}
    for name, (algorithm, matched) in METHODS.items():
        with torch.no_grad():
            image = reconstruct(noise, geometry, volume, algorithm=algorithm, match_fbp_noise=matched).numpy()
        variance[name] = float(image[:, centre, centre].var())
        nps[name] = radial_nps(image[:, centre, centre], bins)
    middle = (bins[:-1] + bins[1:]) / 2
    predicted = linear_interpolation_power(torch.from_numpy(middle)).numpy()
    print("variance: " + ", ".join(f"{k} {v:.4g}" for k, v in variance.items())
          + f"; exact / fbp {variance['fourier exact'] / variance['fbp']:.3f}")
    print(f"{'f (cyc/px)':>10s} {'fbp/exact':>10s} {'predicted':>10s} {'fbp/fourier':>12s}")
    for i, f in enumerate(middle):
        print(f"{f:10.3f} {nps['fbp'][i] / nps['fourier exact'][i]:10.3f} {predicted[i]:10.3f} "
              f"{nps['fbp'][i] / nps['fourier'][i]:12.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"size": n, "angles": args.angles, "slices": args.slices, "variance": variance,
                                   "frequency": middle.tolist(), "predicted_ratio": predicted.tolist(),
                                   "nps": {k: v.tolist() for k, v in nps.items()}}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
