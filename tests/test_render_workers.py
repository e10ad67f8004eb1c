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

    def turn(offset_deg: float) -> list[int]:
        """Route a turn's frames as they arrive, three in hand: the oldest is done as the next one comes."""
        chosen: list[int] = []
        for angle in grid:
            if len(chosen) >= 3:
                pool._busy[chosen[-3]] -= 1
            chosen.append(pool.worker_for(angle + offset_deg))
            pool._busy[chosen[-1]] += 1
        for worker in chosen[-3:]:
            pool._busy[worker] -= 1
        return chosen

    first = turn(0.0)
    shares = np.bincount(first, minlength=3) / len(grid)
    assert np.all(np.abs(shares - 1 / 3) < 0.05)  # new views spread evenly
    assert turn(360.0) == first  # the next turn: every view where it was rendered
    assert turn(-720.0 + 1e-9) == first


def test_darks_go_to_the_least_busy_worker_and_a_still_stage_spills_over():
    pool = _workers(2)
    pool._cut(2**20 // 8)  # full frames: 8 slots, a spill behind 2 frames
    own = pool.worker_for(10.0)
    other = 1 - own
    pool._busy[own] = 1
    assert pool.worker_for(None) == other
    assert pool.worker_for(10.0) == own  # a short queue: the view's own worker still
    pool._busy[own] = 2
    assert pool.worker_for(10.0) == other  # a still stage: the other worker shares the stream ...
    pool._busy[own] = 3
    pool._busy[other] = 2
    assert pool.worker_for(10.0) == other  # ... and holds the view from then on
    # A scan never spills: the next turn's views stay with their worker however long its queue.
    pool._busy[own], pool._busy[other] = 0, 0
    assert pool.worker_for(20.0) == own
    pool._busy[own] = 0
    assert pool.worker_for(30.0) == own  # (ties: the first worker)
    pool._busy[own] = 6
    assert pool.worker_for(20.0 + 360.0) == own
