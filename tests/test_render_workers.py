"""Which render worker a frame goes to: the one holding its view, spread evenly, spilling over when behind."""

from __future__ import annotations

import numpy as np

from nanoscope_daq.config import load_config
from nanoscope_daq.sim.ioc.camera.render_workers import RenderWorkers


def _workers(count: int) -> RenderWorkers:
    return RenderWorkers(load_config(), workers=count, block_bytes=2**20)  # no process starts before a render


def test_a_view_returns_to_its_worker_and_a_scan_spreads_over_all():
    pool = _workers(3)
    grid = np.arange(900) * 0.2 + 0.0937  # a fly scan's mid-exposure angles
    first_turn = [pool.worker_for(a) for a in grid]
    assert [pool.worker_for(a + 360.0) for a in grid] == first_turn  # the next turn: the same workers
    assert [pool.worker_for(a - 720.0 + 1e-9) for a in grid] == first_turn
    shares = np.bincount(first_turn, minlength=3) / len(grid)
    assert np.all(np.abs(shares - 1 / 3) < 0.05)
    assert len(set(first_turn[:10])) > 1  # neighbouring angles alternate, so no worker idles in a scan


def test_darks_go_to_the_least_busy_worker_and_a_backlogged_view_spills_over():
    pool = _workers(2)
    pool._cut(2**20 // 8)  # full frames: 8 slots
    own = pool.worker_for(10.0)
    other = 1 - own
    pool._busy[own] = 1
    assert pool.worker_for(None) == other
    assert pool.worker_for(10.0) == own  # a short queue: the view's own worker still
    pool._busy[own] = 2
    assert pool.worker_for(10.0) == other  # a still stage: the other worker shares the stream
    pool._cut(2**20 // 256)  # small frames: 256 slots, a spill only behind 64 frames
    pool._busy[own] = 63
    assert pool.worker_for(10.0) == own
    pool._busy[own] = 64
    assert pool.worker_for(10.0) == other
