"""Frames rendered in worker processes, handed back through shared memory.

The imaging physics holds Python's GIL for much of a frame (random bytes, table
look-ups, the projector's loops), so threads of one process render barely faster
than one; processes render in parallel on every core. Each worker builds its own
:class:`Imager` from the configuration (same seed: the same phantom and detector)
and writes the frame into a shared-memory slot; the IOC copies it out (a memcpy)
and frees the slot. Only the Exposure, the frame's random generator and the readout
window travel to the worker: the frame is fully determined by them.

Each worker keeps its own cache of views (imager.py), so the pool remembers which workers
rendered each angle (modulo 360 degrees): a projection at a known angle goes to the least
busy of them -- the next turn of a time series finds its views where they were rendered --
and one at a new angle, like a dark or a flat, to the least busy worker, which spreads a
scan's new views evenly. Views can also be prepared ahead (:meth:`RenderWorkers.prepare`: a
scan's angle grid rendered before its first trigger, spread over the workers the same way),
so that the scan's frames find them. At a still stage (the same angle as the projection before) a frame
whose workers have all fallen far behind goes to the least busy one too, which renders the
view once and shares the stream; in a scan, where each angle is new, it never does: there
that would cost a new view per frame.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import shared_memory

import numpy as np

from ....config import Config
from ...imaging.exposure import Exposure
from ...orphans import exit_with_parent
from .frames import FrameWindow, render

MAX_SLOTS = 256
"""Most frames rendering at once (small binned frames), whatever fits the block."""
ROUTING_QUANTUM_DEG = 1e-3
"""Angles this close share a worker (far below any snapping quantum of imager.Imager.snap)."""
SPILL_SHARE = 0.5
"""At a still stage a projection goes to the least busy worker instead of one holding its view
(which then renders the view once and holds it too) when those have this share of a worker's
slots, and at least 2 frames, more in hand: with two workers and full frames (4 slots) the
stream is shared at once."""

_worker: dict = {}
"""Per worker process: its imager and the shared-memory block (set by _start_worker)."""


def _start_worker(config: Config, block_name: str) -> None:
    from ...imaging.imager import Imager

    exit_with_parent()
    _worker["imager"] = Imager(config)
    _worker["block"] = shared_memory.SharedMemory(name=block_name)


def _render_into(slot: int, slot_bytes: int, exposure: Exposure, rng: np.random.Generator,
                 window: FrameWindow) -> tuple[tuple[int, ...], str, int]:
    """Render one frame into ``slot`` of the shared block; returns its shape, dtype and the views rendered new."""
    imager = _worker["imager"]
    before = imager.views_rendered
    frame = render(imager, exposure, rng, window)
    if frame.nbytes > slot_bytes:
        raise ValueError(f"a frame of {frame.nbytes} B does not fit a {slot_bytes} B render slot")
    target = np.ndarray(frame.shape, frame.dtype, buffer=_worker["block"].buf, offset=slot * slot_bytes)
    target[...] = frame
    return frame.shape, frame.dtype.str, imager.views_rendered - before


def _prepare_view(exposure: Exposure) -> int:
    """Render the view of ``exposure`` into this worker's view cache (no frame, no noise); returns 1 if new."""
    imager = _worker["imager"]
    before = imager.views_rendered
    imager.transmission(exposure)
    return imager.views_rendered - before


def _warm_up(exposure: Exposure) -> None:
    """Build this worker's open-beam photons and detector maps for the settings of ``exposure`` (no view)."""
    _worker["imager"].warm_up(exposure)


class RenderWorkers:
    """A pool of render processes and the shared-memory slots their frames come back in.

    The block of ``block_bytes`` is cut into as many slots as frames of the present size
    fit (at most MAX_SLOTS): few for full frames, many for binned ones, so small frames
    keep every worker busy. It is cut anew when the frame size changes, once no render
    of the old size is under way.
    """

    def __init__(self, config: Config, *, workers: int, block_bytes: int) -> None:
        self.config = config
        self.workers = workers
        self.block_bytes = block_bytes
        self._slot_bytes = 0
        self._free: asyncio.Queue[int] = asyncio.Queue()
        self._users = 0
        self._unused = asyncio.Event()
        self._unused.set()
        self._block: shared_memory.SharedMemory | None = None
        self._pools: list[ProcessPoolExecutor] = []
        self._busy = [0] * workers
        self._slots = 0
        self._holders: dict[int, int] = {}
        """Per angle step (ROUTING_QUANTUM_DEG, modulo 360 degrees): bit mask of the workers that rendered it."""
        self._last_step = -1
        self.views_rendered = 0
        """Views the workers have rendered exactly so far (the rest came from their caches)."""

    def _start(self) -> None:
        """Allocate the block and start the processes: at the first frame, so that a simulator
        whose camera is not used never starts them."""
        self._block = shared_memory.SharedMemory(create=True, size=self.block_bytes)
        atexit.register(self.close)
        self._pools = [
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                                initargs=(self.config, self._block.name))
            for _ in range(self.workers)
        ]

    def _cut(self, nbytes: int) -> None:
        if nbytes > self.block_bytes:
            raise ValueError(f"a frame of {nbytes} B exceeds the {self.block_bytes} B render block")
        self._slot_bytes = nbytes
        self._slots = min(MAX_SLOTS, self.block_bytes // nbytes)
        self._free = asyncio.Queue()
        for slot in range(self._slots):
            self._free.put_nowait(slot)

    def worker_for(self, view_angle_deg: float | None) -> int:
        """The worker a frame goes to (and, for a view, remembered as holding it).

        A view at an angle some workers rendered: the least busy of those, unless the stage stands
        still (the angle of the projection before) and it is far behind the least busy worker
        (SPILL_SHARE); a new angle, or no view (``None``): the least busy.
        """
        least = self._busy.index(min(self._busy))
        if view_angle_deg is None:
            return least
        step = round((view_angle_deg % 360.0) / ROUTING_QUANTUM_DEG) % round(360.0 / ROUTING_QUANTUM_DEG)
        holders = self._holders.get(step, 0)
        chosen = least
        if holders:
            best = min((w for w in range(self.workers) if holders >> w & 1), key=self._busy.__getitem__)
            behind = self._busy[best] - self._busy[least] >= max(2.0, SPILL_SHARE * self._slots / self.workers)
            if not (behind and step == self._last_step):
                chosen = best
        self._holders[step] = holders | 1 << chosen
        self._last_step = step
        return chosen

    async def render(self, exposure: Exposure, rng: np.random.Generator, window: FrameWindow,
                     nbytes: int, view_angle_deg: float | None) -> np.ndarray:
        """One frame of ``nbytes``, rendered by the worker for its view (waits for a free slot first).

        ``view_angle_deg``: the (snapped) view angle of a projection (routes it to the worker
        whose view cache holds that view); None for darks and flats.
        """
        if not self._pools:
            self._start()
        while nbytes != self._slot_bytes:
            if self._users == 0:
                self._cut(nbytes)
            else:
                await self._unused.wait()
        self._users += 1
        self._unused.clear()
        try:
            slot = await self._free.get()
            worker = self.worker_for(view_angle_deg)
            self._busy[worker] += 1
            try:
                loop = asyncio.get_running_loop()
                shape, dtype, rendered = await loop.run_in_executor(
                    self._pools[worker], _render_into, slot, self._slot_bytes, exposure, rng, window
                )
                self.views_rendered += rendered
                view = np.ndarray(shape, np.dtype(dtype), buffer=self._block.buf, offset=slot * self._slot_bytes)
                return await loop.run_in_executor(None, view.copy)
            finally:
                self._busy[worker] -= 1
                self._free.put_nowait(slot)
        finally:
            self._users -= 1
            if self._users == 0:
                self._unused.set()

    async def prepare(self, views: Sequence[tuple[Exposure, float]],
                      progress: Callable[[int], Awaitable[None]]) -> None:
        """Render the views of projections (exposure, view angle) into the workers' caches.

        Each view goes to a worker as a frame at that view angle would (:meth:`worker_for`: a new
        angle to the least busy), so the scan's frames are later routed to the worker that holds
        it. ``progress(n)`` is awaited after each of the ``n`` views is ready. Then every worker
        builds the detector maps of the views' settings (:meth:`Imager.warm_up`), which it
        would otherwise make at the scan's first frame, seconds behind the camera at 2048^2.
        """
        if not self._pools:
            self._start()
        loop = asyncio.get_running_loop()

        async def one(exposure: Exposure, view_angle_deg: float) -> None:
            worker = self.worker_for(view_angle_deg)
            self._busy[worker] += 1
            try:
                rendered = await loop.run_in_executor(self._pools[worker], _prepare_view, exposure)
                self.views_rendered += rendered
            finally:
                self._busy[worker] -= 1

        for ready, view in enumerate(asyncio.as_completed([one(*view) for view in views]), start=1):
            await view
            await progress(ready)
        if views:  # the maps the scan's frames read out with: otherwise each worker makes them at its first frame
            exposure = views[0][0]
            await asyncio.gather(*(loop.run_in_executor(pool, _warm_up, exposure) for pool in self._pools))

    def close(self) -> None:
        """Stop the workers (an unfinished render is abandoned) and free the shared memory."""
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
        self._pools = []
        if self._block is not None:
            self._block.close()
            self._block.unlink()
            self._block = None
