"""Chunks of a tomogram too large for one worker: slabs of z slices, their halos, and the merges across them.

A tomogram whose analysis would not fit one worker's memory (``task_voxel_cap``, from
the measured peak bytes per voxel and the workers' memory limit, or ``[study]
max_task_voxels``) is cut into slabs of whole z slices (``plan_slabs``); each slab is a
task (slab_tasks.py). What a slab needs beyond its slices is a halo (``Slab.read``); what
is global is merged exactly: the largest 26-connected piece of a mask is found from each
slab's pieces, joined across the faces two slabs share by union-find
(``largest_piece_labels``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import DisjointSet

PEAK_BYTES_PER_VOXEL = 60
"""Peak memory of the whole-volume tomogram task per voxel of its volume (reconstruction's line integrals and
volume, segmentation's and morphometry's float32, int32 and boolean copies, distance transforms): the slope of
the peak over the volume, measured on simulated tomograms of 32 and 96 x 144 x 144 voxels: 58-59 B, 30 B between
32 and 64 (benchmarks/bench_chunks.py; docs/analysis.md)."""
FIXED_PEAK_BYTES = 128 * 2**20
"""What the task's peak holds whatever the volume (torch's and the axis search's buffers): the intercept of the
same measurement."""
WORKER_MEMORY_FRACTION = 0.6
"""Of a worker's memory limit, what one task may plan to use: a task's arrays cannot be spilled, and dask
pauses a worker at 80 % and restarts it at 95 %."""


@dataclass(frozen=True)
class Slab:
    """Slices ``first`` .. ``stop`` of a volume of ``depth`` slices."""

    first: int
    stop: int
    depth: int

    def read(self, halo: int) -> tuple[int, int]:
        """The slices to read for this slab with ``halo`` more on each side, within the volume."""
        return max(0, self.first - halo), min(self.depth, self.stop + halo)

    def inside(self, halo: int) -> slice:
        """Where this slab's own slices lie among those ``read(halo)`` gives."""
        start = self.read(halo)[0]
        return slice(self.first - start, self.stop - start)


def task_voxel_cap(max_task_voxels: int, worker_memory_bytes: int | None) -> int | None:
    """Most voxels one tomogram task may hold: ``max_task_voxels`` when set (> 0), else what
    ``WORKER_MEMORY_FRACTION`` of the smallest worker's memory holds beyond ``FIXED_PEAK_BYTES`` at
    ``PEAK_BYTES_PER_VOXEL``; None when neither is known (no limit)."""
    if max_task_voxels > 0:
        return max_task_voxels
    if worker_memory_bytes:
        return max(0, int(worker_memory_bytes * WORKER_MEMORY_FRACTION) - FIXED_PEAK_BYTES) // PEAK_BYTES_PER_VOXEL
    return None


def plan_slabs(shape: tuple[int, int, int], cap: int | None) -> list[Slab]:
    """Slabs of whole z slices, as even as may be, each at most ``cap`` voxels (one slab when the volume fits).

    Raises ValueError when one slice alone exceeds ``cap`` (the slab is the smallest unit).
    """
    depth, rows, cols = shape
    if cap is None or depth * rows * cols <= cap:
        return [Slab(0, depth, depth)]
    per_slab = cap // (rows * cols)
    if per_slab < 1:
        raise ValueError(f"one slice of {rows} x {cols} voxels is more than a task may hold ({cap} voxels): raise "
                         "[study] max_task_voxels, or give the workers more memory")
    bounds = np.linspace(0, depth, math.ceil(depth / per_slab) + 1).round().astype(int)
    return [Slab(int(a), int(b), depth) for a, b in zip(bounds, bounds[1:])]


def largest_piece_labels(sizes: Sequence[Sequence[int]], faces: Sequence[tuple[np.ndarray, np.ndarray]]
                         ) -> list[np.ndarray]:
    """Per slab, the local labels (of ``ndimage.label``, 26-connected) that make up the volume's largest piece.

    ``sizes[i]``: voxels of each local piece 1..n of slab ``i`` (index 0 unused); ``faces[i]``: slab ``i``'s
    first and last slice of local labels. Pieces touching across a shared face (26-connected: the 3 x 3
    neighbours in the next slab's first slice) are one piece. Ties go to the piece whose first voxel comes first
    in z-y-x order, as ``ndimage.label`` numbers them in the whole volume.
    """
    nodes = DisjointSet((slab, label) for slab, counts in enumerate(sizes) for label in range(1, len(counts)))
    for slab in range(len(faces) - 1):
        below, above = faces[slab][1], faces[slab + 1][0]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                lower = below[max(0, -dy):below.shape[0] - max(0, dy), max(0, -dx):below.shape[1] - max(0, dx)]
                upper = above[max(0, dy):above.shape[0] - max(0, -dy), max(0, dx):above.shape[1] - max(0, -dx)]
                touching = (lower > 0) & (upper > 0)
                for a, b in set(zip(lower[touching].tolist(), upper[touching].tolist())):
                    nodes.merge((slab, a), (slab + 1, b))
    best, best_key = None, None
    for group in nodes.subsets():
        size = sum(int(sizes[slab][label]) for slab, label in group)
        key = (-size, min(group))
        if best_key is None or key < best_key:
            best, best_key = group, key
    chosen: list[list[int]] = [[] for _ in sizes]
    for slab, label in best or ():
        chosen[slab].append(label)
    return [np.array(sorted(labels), dtype=np.int64) for labels in chosen]
