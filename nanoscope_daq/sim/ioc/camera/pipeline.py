"""From an exposed frame to the plugins: the camera's frame memory, rendering and delivery.

Rendering an exact projection takes far longer than a frame period (seconds per new
view at full resolution), so exposure and rendering are decoupled: at the end of each
exposure the world's state at mid-exposure is captured (microseconds) and the frame
is queued; render worker processes draw frames in parallel; one task hands them to
the plugins strictly in order once read out. The sensor therefore keeps its exact timing
whatever rendering costs, frames arrive late rather than never, and the only limit
is memory: each frame reserves its pixel bytes in :class:`FrameBuffer` from exposure
start until the plugins have it, like the camera's and driver's buffers. A full
buffer holds the sensor back (never drops a frame).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from ...world import World
from .frames import FrameState, FrameTiming, FrameType, FrameWindow
from .render_workers import RenderWorkers

RENDER_BLOCK_FULL_FRAMES_PER_WORKER = 2
"""Shared memory for frames coming back from the render workers, in full frames per worker."""


class FrameBuffer:
    """The camera's frame memory, accounted in bytes."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.used_bytes = 0
        self.frames = 0
        self._freed = asyncio.Event()

    def fits(self, nbytes: int) -> bool:
        return self.used_bytes + nbytes <= self.capacity_bytes

    def take(self, nbytes: int) -> None:
        """Reserve ``nbytes`` (only call when they fit)."""
        if not self.fits(nbytes):
            raise RuntimeError(f"frame buffer full: {nbytes} B do not fit")
        self.used_bytes += nbytes
        self.frames += 1

    async def wait_for_room(self, nbytes: int) -> None:
        while not self.fits(nbytes):
            self._freed.clear()
            await self._freed.wait()

    def release(self, nbytes: int) -> None:
        self.used_bytes -= nbytes
        self.frames -= 1
        self._freed.set()


@dataclass
class PendingFrame:
    """An exposed frame on its way to the plugins.

    ``delivered`` resolves to True once the plugins have it, False if rendering failed.
    """

    timing: FrameTiming
    state: FrameState
    window: FrameWindow
    rng: np.random.Generator
    nbytes: int
    delivered: asyncio.Future
    pixels: asyncio.Future | None = field(default=None)


Deliver = Callable[[PendingFrame, np.ndarray], Awaitable[None]]
Lost = Callable[[PendingFrame, Exception], Awaitable[None]]


class FramePipeline:
    """Render workers plus an in-order delivery task between the sensor and the plugins."""

    def __init__(self, world: World, *, render_workers: int, buffer_bytes: int, deliver: Deliver, lost: Lost) -> None:
        self.world = world
        self.buffer = FrameBuffer(buffer_bytes)
        self._deliver = deliver
        self._lost = lost
        self._rendering: asyncio.Queue[PendingFrame] = asyncio.Queue()
        rows, cols = world.imager.frame_shape(1)
        block = render_workers * RENDER_BLOCK_FULL_FRAMES_PER_WORKER * rows * cols * 2
        self.workers = RenderWorkers(world.config, workers=render_workers, block_bytes=block)

    def start(self) -> None:
        asyncio.create_task(self._deliver_in_order())

    def submit(self, frame: PendingFrame) -> None:
        """Start rendering an exposed frame (its bytes already taken from the buffer).

        The workers' slots bound how many render at once; the frame buffer bounds the
        memory of those rendered and waiting for delivery.
        """
        exposure = frame.state.exposure
        view_angle = self.world.imager.snap(exposure).angle_deg if frame.state.frame_type == FrameType.PROJECTION \
            else None  # routed by the view's own (snapped) angle, the one its worker caches it under
        frame.pixels = asyncio.ensure_future(self.workers.render(exposure, frame.rng, frame.window, frame.nbytes,
                                                                 view_angle))
        self._rendering.put_nowait(frame)

    async def _deliver_in_order(self) -> None:
        while True:
            frame = await self._rendering.get()
            assert frame.pixels is not None
            try:
                data = await frame.pixels
            except Exception as exc:  # noqa: BLE001 -- the imaging physics failed: reported, counted, never silent
                self.buffer.release(frame.nbytes)
                await self._lost(frame, exc)
                frame.delivered.set_result(False)
                continue
            delay = frame.timing.ready_s - self.world.clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._deliver(frame, data)
            finally:
                self.buffer.release(frame.nbytes)
                frame.delivered.set_result(True)
