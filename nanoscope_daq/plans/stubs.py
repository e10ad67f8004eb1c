"""Plan stubs the tomography plans are made of: camera, shutter, darks, flats, announcing frames.

Blocking device work (CA puts that wait, file bookkeeping) runs in a worker thread via
:func:`blocking`, so the RunEngine's loop stays free for pauses and suspenders.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import Msg
from ophyd.status import StatusBase, SubscriptionStatus

from ..devices import Instrument
from ..devices.capture import FrameCapture
from .dose import DoseMeter

def status_future(status: StatusBase) -> asyncio.Future:
    """An asyncio future (of the running loop) that follows an ophyd Status."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def done(st: StatusBase) -> None:
        def settle() -> None:
            if future.done():
                return
            if st.success:
                future.set_result(True)
            else:
                future.set_exception(st.exception() or RuntimeError(f"{st} failed"))
        loop.call_soon_threadsafe(settle)

    status.add_callback(done)
    return future


def blocking(function: Callable[..., Any], *args: Any, **kwargs: Any):
    """Run ``function(*args, **kwargs)`` in a worker thread and wait for it; returns its result."""
    call = functools.partial(function, *args, **kwargs)

    def start() -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(None, call)

    return (yield from _wait_for(start))


def _wait_for(factory: Callable[[], Any]):
    """``wait_for`` one awaitable; after a pause interrupted the wait, wait again (the RunEngine answers None)."""
    futures = None
    while futures is None:
        futures = yield Msg("wait_for", None, [factory])
    (future,) = futures
    return future.result()


def wait_status(make_status: Callable[[], StatusBase], timeout: float | None = None):
    """Call ``make_status()`` (a device verb) and wait for its Status.

    With ``timeout``, returns False instead of raising when the Status is not done by
    then (it keeps running); a failed Status raises its exception.
    """
    async def wait() -> bool:
        future = status_future(make_status())
        if timeout is None:
            await future
            return True
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if done:
            future.result()
            return True
        return False

    return (yield from _wait_for(wait))


def acquisition_status(xrm: Instrument, frames: int, timeout: float) -> StatusBase:
    """Start an Internal-trigger acquisition of ``frames``; done when the camera returns to Done.

    The camera returns to Done once its last frame has reached the plugins.
    """
    cam = xrm.det.cam
    seen_busy = [False]

    def finished(value, **_) -> bool:
        if value == 1:
            seen_busy[0] = True
        return seen_busy[0] and value == 0

    status = SubscriptionStatus(cam.acquire, finished, timeout=timeout, run=False)
    cam.acquire.put(1, wait=False)
    return status


def configure_internal(xrm: Instrument, frames: int, exposure_s: float) -> None:
    """Camera: Internal trigger, ``frames`` frames at ``exposure_s``, as fast as the sensor reads out."""
    cam = xrm.det.cam
    for signal, value in (
        (cam.trigger_mode, "Internal"), (cam.image_mode, "Multiple"), (cam.num_images, frames),
        (cam.acquire_time, exposure_s),
    ):
        signal.set(value).wait(10.0)
    cam.acquire_period.put(0.0, wait=True)  # as fast as the sensor reads out (the IOC clamps it)


def acquire(xrm: Instrument, capture: FrameCapture, frames: int, exposure_s: float):
    """Take ``frames`` frames (Internal trigger) into the camera file's selected stream."""
    yield from blocking(configure_internal, xrm, frames, exposure_s)
    yield from acquire_started(xrm, capture, frames, exposure_s)


def acquire_started(xrm: Instrument, capture: FrameCapture, frames: int, exposure_s: float):
    """Start an acquisition the camera is configured for and wait until its frames are delivered."""
    timeout = frames * (exposure_s + 1.0) + capture.delivery_timeout_s
    yield from wait_status(lambda: acquisition_status(xrm, frames, timeout))
    capture.acquired(frames)


def shutter(xrm: Instrument, position: str):
    """Open or close the source's shutter and wait until it gets there."""
    yield from wait_status(lambda: xrm.source.shutter.set(position))


def announce(capture: FrameCapture, *, wait_s: float | None = None):
    """Emit stream assets for every stream's frames that are in the file now and not yet announced.

    With ``wait_s``, first wait (up to that long) until every frame acquired so far is
    in the file (the run's last announcement). Announcing never holds up acquisition:
    the simulated camera may deliver frames well after exposing them.
    """
    if wait_s is not None:
        yield from blocking(capture.wait_for_written, capture.expected, wait_s)
    yield from blocking(capture.check_delivery)
    for stream in capture.ready_streams():
        capture.announcing(stream)
        while stream in capture.ready_streams():
            yield from bps.collect(capture, name=stream)


def take_darks(xrm: Instrument, capture: FrameCapture, frames: int, exposure_s: float):
    """``frames`` darks (shutter closed) into the ``darks`` stream."""
    if frames <= 0:
        return
    yield from shutter(xrm, "close")
    capture.select("darks")
    yield from acquire(xrm, capture, frames, exposure_s)
    yield from announce(capture)


def take_flats(
    xrm: Instrument,
    capture: FrameCapture,
    frames: int,
    exposure_s: float,
    axis: str,
    offset_mm: float,
    meter: DoseMeter | None = None,
):
    """``frames`` flats into the ``flats`` stream: specimen moved out along ``axis``, then back, shutter closed."""
    if frames <= 0:
        return
    motor = getattr(xrm, axis)
    home = motor.position
    if meter is not None:
        meter.sample_in_beam(False)
    yield from bps.mv(motor, home + offset_mm)
    yield from shutter(xrm, "open")
    capture.select("flats")
    yield from acquire(xrm, capture, frames, exposure_s)
    yield from shutter(xrm, "close")
    yield from bps.mv(motor, home)
    if meter is not None:
        meter.sample_in_beam(True)
    yield from announce(capture)
