"""Plan stubs the tomography plans are made of: camera, shutter, darks, flats, announcing frames.

Every device action is a bluesky message (``set``, ``prepare``, ``trigger``,
``collect``, ``wait``) on the instrument's devices or the run's :class:`ScanCamera`, so
the RunEngine sees each one, stops what a plan moved when it pauses or aborts, and the
plans can be checked as message lists. The one wait that is not a device action (for
the respiratory gate to open) is a ``wait_for`` message on the monitor's Status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import MsgGenerator
from ophyd.status import StatusBase

from ..devices import Instrument
from ..devices.camera_control import FrameTrigger
from ..devices.scan_camera import ScanCamera
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


def wait_for_status(make_status: Callable[[], StatusBase]) -> MsgGenerator[None]:
    """Wait (a ``wait_for`` message) for the Status ``make_status()`` returns: for conditions, not device actions.

    After a pause interrupted the wait, the RunEngine answers None: the condition is asked for again.
    """
    futures = None
    while futures is None:
        futures = yield from bps.wait_for([lambda: status_future(make_status())])
    (future,) = futures
    future.result()


def acquire(camera: ScanCamera, frames: int, exposure_s: float) -> MsgGenerator[None]:
    """Take ``frames`` frames (Internal trigger) into the camera file's selected stream."""
    yield from bps.prepare(camera, FrameTrigger(frames, exposure_s), wait=True)
    yield from bps.trigger(camera, wait=True)


def shutter(xrm: Instrument, position: str) -> MsgGenerator[None]:
    """Open or close the source's shutter and wait until it gets there."""
    yield from bps.mv(xrm.source.shutter, position)


def announce(camera: ScanCamera) -> MsgGenerator[None]:
    """Emit stream assets for every stream's frames that are in the file now and not yet announced.

    Announcing never holds up acquisition: the simulated camera may deliver frames well
    after exposing them; the run's ``complete`` waits for the last ones.
    """
    capture = camera.capture
    for stream in capture.ready_streams():
        capture.announcing(stream)
        while stream in capture.ready_streams():
            yield from bps.collect(camera, name=stream)


def take_darks(xrm: Instrument, camera: ScanCamera, frames: int, exposure_s: float) -> MsgGenerator[None]:
    """``frames`` darks (shutter closed) into the ``darks`` stream."""
    if frames <= 0:
        return
    yield from shutter(xrm, "close")
    camera.capture.select("darks")
    yield from acquire(camera, frames, exposure_s)
    yield from announce(camera)


def take_flats(
    xrm: Instrument,
    camera: ScanCamera,
    frames: int,
    exposure_s: float,
    axis: str,
    offset_mm: float,
    meter: DoseMeter | None = None,
) -> MsgGenerator[None]:
    """``frames`` flats into the ``flats`` stream: specimen moved out along ``axis``, shutter open, frames, shutter
    closed, specimen back -- also when the scan fails or is aborted among the flats, so that the next scan does not
    take the specimen's place out of the field for its home."""
    if frames <= 0:
        return
    motor = getattr(xrm, axis)
    home = yield from bps.rd(motor)
    if meter is not None:
        meter.sample_in_beam(False)

    def out_of_the_field() -> MsgGenerator[None]:
        yield from bps.mv(motor, home + offset_mm)
        yield from shutter(xrm, "open")
        camera.capture.select("flats")
        yield from acquire(camera, frames, exposure_s)
        yield from shutter(xrm, "close")

    def back_in_the_field() -> MsgGenerator[None]:
        yield from bps.mv(motor, home)
        if meter is not None:
            meter.sample_in_beam(True)

    yield from bpp.finalize_wrapper(out_of_the_field(), back_in_the_field())
    yield from announce(camera)
