"""Learned FBP with known operators against plain FBP and a post-processing CNN, vs the number of training slices.

Slices: random bone-like phantoms (phantoms.random_bone_slice: soft tissue, cortical
rings with marrow, pores), ``--size`` pixels, exact line integrals (2 rays per pixel).
Instrument A (training and first test set): ``--size`` + 1 detector columns, 90
angles over 180 deg, low dose: Poisson noise at 1000 photons per unattenuated pixel
(the most attenuating phantom transmits ~e^-2.5). Instrument B (transfer): the same
detector sampling, 150 angles, 4000 photons, and a scintillator blur (Gaussian, sigma
0.8 px) on the detector. Everything is trained on instrument A and tested on both.

Methods, each trained with Adam for ``--steps`` batches of 8 slices from the same N
training slices (the same budget):
* plain FBP: Ram-Lak, and Hann (the best fixed window here);
* learned FBP (learned_fbp.py): the filter's gain per frequency (size // 2 + 1 + ...
  parameters) learned, weights and back-projection fixed;
* post-processing CNN: Ram-Lak FBP followed by a residual CNN (4 layers of 3 x 3
  convolutions, 16 channels, ~5k parameters), trained on the same slices.
RMSE against the rasterised phantom inside the inscribed disc (values: bone 1.0).

Usage: python benchmarks/bench_learned_fbp.py [--size 64] [--train 1 4 16 64] [--test 16] [--steps 300]
Writes benchmarks/results/bench_learned_fbp.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from nanoscope_daq.recon import FilterSpec, ParallelGeometry, VolumeGrid, reconstruct
from nanoscope_daq.recon.learned_fbp import LearnedFilterFBP, rmse, train
from nanoscope_daq.recon.phantoms import parallel_sinogram, poisson_line_integrals, random_bone_slice, rasterise

RESULTS = Path(__file__).parent / "results" / "bench_learned_fbp.json"
SCALE = 2.5 / 40.0
"""Phantom line integrals (pixels x values) to the specimen's: a typical bone chord of ~40 px transmits ~e^-2.5."""


@dataclass(frozen=True)
class Instrument:
    name: str
    angles: int
    photons: float
    blur_px: float


INSTRUMENTS = (Instrument("A: 90 angles, 1000 photons", 90, 1000.0, 0.0),
               Instrument("B: 150 angles, 4000 photons, 0.8 px blur", 150, 4000.0, 0.8))


def dataset(instrument: Instrument, size: int, count: int, seed: int) -> tuple[ParallelGeometry, torch.Tensor,
                                                                                torch.Tensor]:
    """Geometry, sinograms (count, angles, cols) and truths (count, size, size) of random slices."""
    geometry = ParallelGeometry(np.linspace(0, 180, instrument.angles, endpoint=False), 1, size + 1, 1.0)
    rng = np.random.default_rng(seed)
    sinograms, truths = [], []
    for _ in range(count):
        slice_ = random_bone_slice(rng, 0.45 * size)
        lines = parallel_sinogram(slice_, geometry, subsamples=2)
        if instrument.blur_px:
            lines = gaussian_filter1d(lines, instrument.blur_px, axis=1, mode="nearest")
        sinograms.append(poisson_line_integrals(lines, instrument.photons, SCALE, rng))
        truths.append(rasterise(slice_, (size, size), 1.0, 4))
    return (geometry, torch.tensor(np.array(sinograms), dtype=torch.float32),
            torch.tensor(np.array(truths), dtype=torch.float32))


def fbp(sinograms: torch.Tensor, geometry: ParallelGeometry, size: int, window: str) -> torch.Tensor:
    geometry = ParallelGeometry(geometry.angles_deg, sinograms.shape[0], geometry.cols, 1.0)
    with torch.no_grad():
        return reconstruct(sinograms.permute(1, 0, 2), geometry, VolumeGrid((sinograms.shape[0], size, size), 1.0),
                           filter=FilterSpec(window))


class PostProcessingCNN(torch.nn.Module):
    """Image + a residual from 4 layers of 3 x 3 convolutions (16 channels, ReLU)."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(1, channels, 3, padding=1), torch.nn.ReLU()]
        for _ in range(2):
            layers += [torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU()]
        layers.append(torch.nn.Conv2d(channels, 1, 3, padding=1))
        self.body = torch.nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.body(images[:, None])[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    size = args.size
    geometry_a, train_sinograms, train_truths = dataset(INSTRUMENTS[0], size, max(args.train), seed=1)
    tests = [dataset(instrument, size, args.test, seed=100 + i) for i, instrument in enumerate(INSTRUMENTS)]
    rows = []
    for name, window in (("FBP Ram-Lak", "ram-lak"), ("FBP Hann", "hann")):
        errors = [rmse(fbp(s, g, size, window), t) for g, s, t in tests]
        rows.append({"method": name, "training_slices": 0, "parameters": 0, "seconds": 0.0, "rmse": errors})
    for count in args.train:
        sinograms, truths = train_sinograms[:count], train_truths[:count]
        learned = LearnedFilterFBP(geometry_a, (size, size), 1.0)
        began = time.perf_counter()
        train(learned, sinograms, truths, steps=args.steps, learning_rate=0.05)
        seconds = time.perf_counter() - began
        with torch.no_grad():
            errors = [rmse(learned.with_geometry(g)(s), t) for g, s, t in tests]
        rows.append({"method": "learned FBP (filter)", "training_slices": count,
                     "parameters": sum(p.numel() for p in learned.parameters()), "seconds": round(seconds, 1),
                     "rmse": errors})
        cnn = PostProcessingCNN()
        began = time.perf_counter()
        train(cnn, fbp(sinograms, geometry_a, size, "ram-lak"), truths, steps=args.steps, learning_rate=0.002)
        seconds = time.perf_counter() - began
        with torch.no_grad():
            errors = [rmse(cnn(fbp(s, g, size, "ram-lak")), t) for g, s, t in tests]
        rows.append({"method": "FBP + post-processing CNN", "training_slices": count,
                     "parameters": sum(p.numel() for p in cnn.parameters()), "seconds": round(seconds, 1),
                     "rmse": errors})
        for row in rows[-2:]:
            print(json.dumps(row), flush=True)
    print(f"\n{'method':28s} {'slices':>6s} {'params':>7s} {'train s':>8s} {'RMSE A':>8s} {'RMSE B':>8s}")
    for row in rows:
        print(f"{row['method']:28s} {row['training_slices']:6d} {row['parameters']:7d} {row['seconds']:8.1f} "
              f"{row['rmse'][0]:8.4f} {row['rmse'][1]:8.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"instruments": [i.name for i in INSTRUMENTS], "size": size, "steps": args.steps,
                                   "test_slices": args.test, "torch": torch.__version__, "cores": os.cpu_count(),
                                   "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
