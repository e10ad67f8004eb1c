"""Cone-beam (FDK) back-projection on the CPU: the compiled kernel against the differentiable torch path.

Both back-project the same filtered projections (random, so every voxel reads real data)
of the instrument's cone beam (source 25 mm and detector 125 mm from the axis, detector
pixels 88 um: the 11 um camera binned 8x; N x N detector, the N^3 default volume) over
360 deg, in one process: the torch path (``grid_sample``, what calibration differentiates
through) and cone_kernel.py (what every reconstruction without gradients now takes).
Reported: seconds, voxel updates per second (voxels x projections / s), the CPU seconds of
the compiled kernel (all threads: on a machine that others load, updates per CPU second
compare runs better than wall time), the speed-up, and the largest difference relative to
the largest value. The torch path is skipped above
``--torch-max`` (it takes minutes there).

Usage: python benchmarks/bench_cone_backprojection.py [--sizes 64 128 256] [--projections 90] [--threads 2]
Writes benchmarks/results/bench_cone_backprojection.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numba
import numpy as np
import torch

from nanoscope_daq.recon import ConeGeometry
from nanoscope_daq.recon.backproject import backproject_cone

RESULTS = Path(__file__).parent / "results" / "bench_cone_backprojection.json"


def timed_backprojection(filtered: torch.Tensor, angles: torch.Tensor, geometry: ConeGeometry,
                         volume) -> tuple[float, float, torch.Tensor]:
    """Seconds, CPU seconds (every thread) and result of one back-projection (the torch path when ``filtered``
    requires a gradient)."""
    started, cpu = time.perf_counter(), time.process_time()
    value = backproject_cone(filtered, angles, geometry, volume).detach()
    return time.perf_counter() - started, time.process_time() - cpu, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--projections", type=int, default=90)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch-max", type=int, default=128, help="largest size the torch path runs at")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for size in args.sizes:
        angles_deg = np.arange(args.projections) * 360.0 / args.projections
        geometry = ConeGeometry(angles_deg, size, size, 0.088, 25.0, 125.0)
        volume = geometry.default_volume()
        filtered = torch.from_numpy(rng.standard_normal((args.projections, size, size)).astype(np.float32))
        angles = torch.deg2rad(torch.tensor(angles_deg, dtype=torch.float32))
        backproject_cone(filtered[:2], angles[:2], geometry, volume)  # compiles the kernel (cached on disk)
        compiled_s, compiled_cpu_s, compiled = timed_backprojection(filtered, angles, geometry, volume)
        updates = float(np.prod(volume.shape)) * args.projections
        row = {"size": size, "projections": args.projections, "compiled_s": round(compiled_s, 3),
               "compiled_updates_per_s": updates / compiled_s, "compiled_cpu_s": round(compiled_cpu_s, 3),
               "compiled_updates_per_cpu_s": updates / compiled_cpu_s}
        if size <= args.torch_max:
            wanting_gradient = filtered.clone().requires_grad_(True)  # a gradient wanted: the torch path
            torch_s, _, reference = timed_backprojection(wanting_gradient, angles, geometry, volume)
            row.update(torch_s=round(torch_s, 3), torch_updates_per_s=updates / torch_s,
                       speedup=round(torch_s / compiled_s, 1),
                       max_relative_difference=float((compiled - reference).abs().max() / reference.abs().max()))
        rows.append(row)
        print(f"{size}^3 from {args.projections} projections: compiled {compiled_s:.2f} s "
              f"({updates / compiled_s / 1e6:.0f} M voxel updates/s; {compiled_cpu_s:.2f} CPU s, "
              f"{updates / compiled_cpu_s / 1e6:.0f} M per CPU s)"
              + (f", torch {row['torch_s']:.2f} s ({row['torch_updates_per_s'] / 1e6:.0f} M/s): "
                 f"{row['speedup']}x, max difference {row['max_relative_difference']:.1e}" if "torch_s" in row else ""))
    last = rows[-1]
    per_projection = last["compiled_s"] / args.projections
    print(f"at {last['size']}^3: {per_projection * 1e3:.1f} ms per projection; 720 projections at 40 fps arrive in "
          f"18 s and cost {per_projection * 720:.1f} s to back-project")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.node(), "threads": args.threads, "runs": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
