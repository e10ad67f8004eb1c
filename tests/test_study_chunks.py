"""Slabs of a tomogram (analysis/study/chunks.py): the plan, and the largest piece found across slab faces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nanoscope_daq.analysis.morphometry import FULL_26
from nanoscope_daq.analysis.study.chunks import (
    FIXED_PEAK_BYTES,
    PEAK_BYTES_PER_VOXEL,
    Slab,
    largest_piece_labels,
    plan_slabs,
    task_voxel_cap,
)


def test_a_volume_is_cut_into_even_slabs_of_whole_slices_only_when_it_does_not_fit():
    assert plan_slabs((32, 144, 144), None) == [Slab(0, 32, 32)]
    assert plan_slabs((32, 144, 144), 32 * 144 * 144) == [Slab(0, 32, 32)]
    assert plan_slabs((32, 144, 144), 10 * 144 * 144) == [Slab(0, 8, 32), Slab(8, 16, 32), Slab(16, 24, 32),
                                                          Slab(24, 32, 32)]
    assert Slab(8, 16, 32).read(4) == (4, 20) and Slab(0, 8, 32).read(4) == (0, 12)
    assert Slab(0, 8, 32).inside(4) == slice(0, 8) and Slab(24, 32, 32).inside(4) == slice(4, 12)
    with pytest.raises(ValueError, match="raise \\[study\\] max_task_voxels"):
        plan_slabs((32, 144, 144), 1000)


def test_the_cap_is_the_configured_one_or_what_the_workers_memory_holds():
    assert task_voxel_cap(5000, 2**30) == 5000
    assert task_voxel_cap(0, 2**30) == (int(0.6 * 2**30) - FIXED_PEAK_BYTES) // PEAK_BYTES_PER_VOXEL
    assert task_voxel_cap(0, 2**20) == 0  # a worker too small for any slab: plan_slabs says so
    assert task_voxel_cap(0, None) is None


@pytest.mark.parametrize("seed", range(4))
def test_the_largest_piece_joined_across_slab_faces_is_the_whole_volumes(seed):
    """Random masks near the percolation threshold: pieces wind through several slabs (and sizes may tie)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((24, 20, 20)) < 0.12
    whole, _ = ndimage.label(mask, structure=FULL_26)
    sizes = np.bincount(whole.ravel())
    sizes[0] = 0
    expected = whole == np.argmax(sizes)
    bounds = [0, 5, 6, 14, 24]
    pieces = [ndimage.label(mask[a:b], structure=FULL_26)[0] for a, b in zip(bounds, bounds[1:])]
    chosen = largest_piece_labels([np.bincount(p.ravel()) for p in pieces], [(p[0], p[-1]) for p in pieces])
    found = np.concatenate([np.isin(p, keep) for p, keep in zip(pieces, chosen, strict=True)])
    assert sum(keep.size > 0 for keep in chosen) >= 3 and np.array_equal(found, expected)  # spans slabs
