"""Inference speed of the segmentation networks on 512 x 512 slices (issue #6 goal: U-Net >= 20 slices/s on CPU).

For each architecture and width it times ``segment_volume`` (normalisation, batch-norm
folding, the network on each whole slice, argmax; without post-processing) on a volume of 512 x 512 slices, best and
median of several runs, on the CPU with the given thread counts and on CUDA when torch
sees a device. Post-processing (island removal, closing) is timed apart per slice.

Usage: python benchmarks/bench_segmentation.py [--slices 32] [--threads 1 2] [--repeats 3] [--tile 512]
Writes benchmarks/results/bench_segmentation.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from nanoscope_daq.analysis.inference import segment_volume
from nanoscope_daq.analysis.model_files import ModelFile
from nanoscope_daq.analysis.models import build_model
from nanoscope_daq.analysis.postprocess import postprocess

RESULTS = Path(__file__).parent / "results" / "bench_segmentation.json"
GOAL_UNET_CPU = 20.0
VARIANTS = [("unet", 6), ("unet", 8), ("sensor3d", 6)]
"""The shipped width (6) first; the old width (8) for comparison."""


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up (allocations, kernel selection)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=512)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(args.slices, 512, 512)).astype(np.float32)
    devices = [("cpu", t) for t in args.threads] + ([("cuda", 0)] if torch.cuda.is_available() else [])
    rows = []
    for arch, base in VARIANTS:
        model = build_model(arch, 4, base=base).eval()
        info = ModelFile(arch, "lcn", base, 3, 1 if arch == "unet" else 3, 0.5)
        for device, threads in devices:
            if threads:
                torch.set_num_threads(threads)
            times = _time(lambda model=model, info=info, device=device: segment_volume(
                model, info, volume, tile=args.tile, overlap=32, device=device), args.repeats)
            rate = args.slices / min(times)
            rows.append({"architecture": arch, "base_channels": base, "device": device, "threads": threads,
                         "slices_per_s_best": rate, "slices_per_s_median": args.slices / statistics.median(times)})
            print(f"{arch:8s} base {base}  {device}{'' if device == 'cuda' else f' x{threads}'}: "
                  f"{rate:6.1f} slices/s (best), {args.slices / statistics.median(times):6.1f} (median)")
    labels = rng.choice(np.array([0, 2, 3, 5], np.uint8), size=(args.slices, 512, 512), p=[0.3, 0.4, 0.02, 0.28])
    post = _time(lambda: postprocess(labels), 1)
    result = {
        "platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "slice": [512, 512], "tile": args.tile, "slices": args.slices, "rows": rows,
        "postprocess_ms_per_slice": 1e3 * min(post) / args.slices,
        "goal_unet_cpu_slices_per_s": GOAL_UNET_CPU,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"post-processing: {result['postprocess_ms_per_slice']:.1f} ms/slice; wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
