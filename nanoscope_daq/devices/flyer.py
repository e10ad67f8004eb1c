"""Fly tomography: continuous rotation, one PSO-triggered frame per grid angle, resumable.

:class:`TomoFlyer` fires the camera at ``start + i * step`` (``i < count``) while the
stage turns at constant speed. It runs the grid in *segments*: ``kickoff`` moves the
stage back by the run-up (taxi) distance, arms the camera (External trigger) and the
PSO with the angles not fired yet, and spins up; the segment ends when every angle has
fired, or early when :meth:`TomoFlyer.interrupt` is called (pause, suspension). The next
``kickoff`` resumes at the first angle not imaged, so a paused scan loses no angle and
images none twice. If the beam goes off while the PSO is armed (interlock trip, shutter
closing), the resume starts at the last angle exposed before the loss (by the IOCs' own
time stamps), re-taking every frame the loss may have spoiled; the NXtomo writer marks
the spoiled ones invalid, so each angle has exactly one valid frame.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from ophyd.status import Status
from ophyd.utils import WaitTimeoutError

from .camera_control import FrameTrigger
from .instrument import Instrument
from .scan_camera import ScanCamera
from .signals import done_status

log = logging.getLogger(__name__)
ARM_TIMEOUT_S = 10.0
EXPOSURE_END_MARGIN_S = 0.05
BEAM_LOSS_MARGIN_S = 0.25
"""Angles fired this long before the beam loss was posted are re-taken too: the readback
is posted a little after the source actually lost the beam."""
"""Wait after the last pulse beyond the exposure before the camera is stopped (start latency)."""


@dataclass(frozen=True)
class AngleGrid:
    """The angles a fly scan images: ``start_deg + i * step_deg`` for ``i < count``."""

    start_deg: float
    step_deg: float
    count: int

    def angle(self, index: int) -> float:
        return self.start_deg + index * self.step_deg

    @property
    def direction(self) -> int:
        return 1 if self.step_deg > 0 else -1

    @property
    def end_deg(self) -> float:
        return self.angle(self.count - 1)

    def shifted(self, offset_deg: float) -> AngleGrid:
        return AngleGrid(self.start_deg + offset_deg, self.step_deg, self.count)


def taxi_distance_deg(velocity: float, acceleration_s: float, margin_deg: float) -> float:
    """Run-up before the first angle: the distance covered while accelerating (v * ACCL / 2), plus a margin."""
    return abs(velocity) * acceleration_s / 2.0 + margin_deg


class TomoFlyer:
    """Fly-scan controller over the instrument's rotation stage, PSO and camera.

    ``prepare(grid, velocity, exposure_s)`` before a tomogram; then the bluesky flyer
    verbs: ``kickoff()`` (Status: the stage turns at speed with the PSO armed),
    ``complete()`` (Status: every grid angle fired and its frame exposed). The flyer
    opens the shutter only once the stage waits at its run-up position, and closes it
    as soon as the last frame is exposed: the animal sees no beam while the stage
    travels back.
    Frames are announced by the run's :class:`ScanCamera`, not by this object.
    """

    def __init__(self, xrm: Instrument, camera: ScanCamera, *, taxi_margin_deg: float = 1.0) -> None:
        self.xrm = xrm
        self.camera = camera
        self.name = f"{xrm.name}_flyer"
        self.parent = None
        self.taxi_margin_deg = taxi_margin_deg
        self.grid: AngleGrid | None = None
        self.velocity = 0.0
        self.exposure_s = 0.0
        self.next_index = 0
        """First grid angle not yet imaged."""
        self._lock = threading.RLock()
        self._segment: _Segment | None = None
        self._complete: Status | None = None

    # -- set-up ------------------------------------------------------------------------

    def nearest_turn(self, grid: AngleGrid, velocity: float, position_deg: float) -> AngleGrid:
        """``grid`` shifted by whole turns to the run-up position nearest ``position_deg``.

        The same views a turn later or earlier, so the stage never travels back a whole scan.
        """
        taxi = taxi_distance_deg(velocity, self.xrm.rot.acceleration.get(), self.taxi_margin_deg)
        turns = round((position_deg - (grid.start_deg - grid.direction * taxi)) / 360.0)
        return grid.shifted(360.0 * turns)

    def prepare(self, grid: AngleGrid, velocity: float, exposure_s: float) -> Status:
        """Set the grid of the next tomogram (``bps.prepare``); nothing moves until ``kickoff``.

        The Status is finished at once.
        """
        with self._lock:
            if self._segment is not None:
                raise RuntimeError(f"{self.name}: a fly segment is running; interrupt it first")
            self.velocity = abs(velocity)
            self.grid = grid
            self.exposure_s = exposure_s
            self.next_index = 0
            self._complete = Status(obj=self)
        return done_status(self)

    @property
    def finished(self) -> bool:
        return self.grid is not None and self.next_index >= self.grid.count

    def taxi_start_deg(self, index: int) -> float:
        """Where the stage waits before imaging grid angle ``index``."""
        assert self.grid is not None
        taxi = taxi_distance_deg(self.velocity, self.xrm.rot.acceleration.get(), self.taxi_margin_deg)
        return self.grid.angle(index) - self.grid.direction * taxi

    # -- bluesky flyer verbs --------------------------------------------------------------

    def kickoff(self) -> Status:
        """Start (or resume) imaging the grid; done once the stage turns at speed, armed."""
        with self._lock:
            if self.grid is None or self._complete is None:
                raise RuntimeError(f"{self.name}: kickoff before prepare(grid, velocity, exposure_s)")
            status = Status(obj=self)
            if self.finished or self._segment is not None:
                status.set_finished()
                return status
            segment = self._segment = _Segment(self, self.next_index)
        threading.Thread(target=segment.run, args=(status,), name=f"{self.name}-segment", daemon=True).start()
        return status

    def complete(self) -> Status:
        """Done once every grid angle has fired and its frame reached the camera file's queue."""
        if self._complete is None:
            raise RuntimeError(f"{self.name}: complete before prepare(grid, velocity, exposure_s)")
        return self._complete

    def describe_collect(self) -> dict:
        """Nothing: the frames are collected from the run's :class:`FrameCapture`, not from the flyer."""
        return {}

    def collect(self) -> list:
        return []

    def interrupt(self) -> None:
        """End the running segment now: disarm, let the last exposure finish, stop the stage.

        Blocks until the camera has delivered every frame it was triggered for, so the
        next kickoff knows exactly which angles are imaged.
        """
        with self._lock:
            segment = self._segment
        if segment is not None:
            segment.interrupt()

    # -- segment bookkeeping (called by _Segment) -------------------------------------------

    def _segment_ended(self, segment: _Segment, imaged: int, fired: int, error: Exception | None) -> None:
        """Account a segment: ``fired`` frames went to the camera file, ``imaged`` angles are done."""
        self.camera.capture.acquired(fired)
        with self._lock:
            if self._segment is segment:
                self._segment = None
            self.next_index = segment.first_index + imaged
            complete = self._complete
            if complete is None or complete.done:
                return
            if error is not None:
                complete.set_exception(error)
            elif self.finished:
                complete.set_finished()


class _Segment:
    """One uninterrupted pass over the grid angles from ``first_index`` on."""

    def __init__(self, flyer: TomoFlyer, first_index: int) -> None:
        self.flyer = flyer
        self.first_index = first_index
        assert flyer.grid is not None
        self.count = flyer.grid.count - first_index
        self._stop_requested = threading.Event()
        self._end_lock = threading.Lock()
        self._ended = threading.Event()
        self._watches: list = []
        self._missed_before = 0
        self._beam_lost_at: float | None = None
        """IOC time stamp of the first beam loss while armed (None: never lost)."""
        self._fired_history: list[tuple[float, int]] = []
        """(IOC time stamp, pulses fired) as the PSO posted them."""

    def _beam_on(self) -> bool:
        """X-rays on and the shutter open: the frames see the specimen."""
        source = self.flyer.xrm.source
        return source.xrays.get() == "On" and source.shutter.status.get() == "Open"

    def _on_beam_change(self, timestamp: float | None = None, **_) -> None:
        if self._beam_lost_at is None and not self._beam_on():
            self._beam_lost_at = timestamp if timestamp is not None else time.time()

    def _on_fired(self, value, timestamp: float, **_) -> None:
        self._fired_history.append((timestamp, int(value)))

    def _imaged_with_beam(self, fired: int) -> int:
        """Angles imaged for sure: all fired, or after a beam loss, those exposed (to mid-exposure) before it.

        Both time stamps come from the IOCs' clock, so Channel Access latency does not
        matter; angles fired within BEAM_LOSS_MARGIN_S before the loss was posted are
        re-taken as well (the source posts its readback just after the loss).
        """
        if self._beam_lost_at is None:
            return fired
        cutoff = self._beam_lost_at - self.flyer.exposure_s / 2 - BEAM_LOSS_MARGIN_S
        before = max((count for stamp, count in self._fired_history if stamp <= cutoff), default=0)
        if before >= fired:  # the beam went off after the last frame: nothing spoiled
            return fired
        return max(before - 1, 0)

    def run(self, kicked_off: Status) -> None:
        """Taxi, arm camera and PSO, spin up; then wait for the last angle (or an interrupt)."""
        flyer, xrm = self.flyer, self.flyer.xrm
        grid = flyer.grid
        assert grid is not None
        rot, pso, cam = xrm.rot, xrm.rot.pso, xrm.det.cam
        try:
            run_up = flyer.velocity * rot.acceleration.get() / 2  # distance to reach speed
            if grid.direction * (grid.angle(self.first_index) - rot.position) < run_up:
                move_to(rot, flyer.taxi_start_deg(self.first_index), velocity=flyer.velocity)
            # else the stage already waits far enough before the first angle (a turnaround)
            flyer.camera.prepare(FrameTrigger(self.count, flyer.exposure_s, external=True)).wait(ARM_TIMEOUT_S)
            for signal, value in (
                (pso.start, grid.angle(self.first_index)), (pso.step, grid.step_deg), (pso.count, self.count),
                (pso.width, flyer.exposure_s),
            ):
                signal.set(value).wait(ARM_TIMEOUT_S)
            self._missed_before = int(cam.missed_triggers.get(use_monitor=False))
            cam.acquire.put(1, wait=False)
            pso.arm.set(1).wait(ARM_TIMEOUT_S)
            xrm.source.shutter.set("open").wait(ARM_TIMEOUT_S)  # beam on the animal only from the run-up on
            self._watches.append((pso.fired, pso.fired.subscribe(self._on_fired, run=False)))
            for signal in (xrm.source.xrays, xrm.source.shutter.status):
                self._watches.append((signal, signal.subscribe(self._on_beam_change, run=False)))
            self._on_beam_change()
            rot.spin.set(grid.direction * flyer.velocity).wait(ARM_TIMEOUT_S + 4 * rot.acceleration.get())
        except Exception as exc:  # noqa: BLE001 -- the status carries it to the plan
            if self._stop_requested.is_set():
                # Interrupted while setting up or spinning up (a pause): the segment just ended
                # early, and the next kickoff resumes at the first angle not imaged.
                self._end()
                kicked_off.set_finished()
                return
            self._end(failure=exc)
            kicked_off.set_exception(exc)
            return
        kicked_off.set_finished()
        while not self._stop_requested.is_set() and pso.status.get() != "Done":
            self._stop_requested.wait(0.02)
        self._end()

    def interrupt(self) -> None:
        self._stop_requested.set()
        self._end()

    def _unwatch(self) -> None:
        watches, self._watches = self._watches, []
        for signal, cid in watches:
            signal.unsubscribe(cid)

    def _end(self, failure: Exception | None = None) -> None:
        """Disarm, let the last exposure finish, stop camera and stage; report the angles imaged.

        Exposed frames are never lost by the camera, so they need not be waited for here;
        the plan waits for the camera file to hold them.
        """
        with self._end_lock:
            if self._ended.is_set():
                return
            xrm = self.flyer.xrm
            pso, cam = xrm.rot.pso, xrm.det.cam
            error = failure
            try:
                if pso.status.get(use_monitor=False) == "Armed":
                    pso.disarm.set(1).wait(ARM_TIMEOUT_S)
                time.sleep(self.flyer.exposure_s + EXPOSURE_END_MARGIN_S)
                self._unwatch()  # closing the shutter now is no beam loss
                closed = xrm.source.shutter.set("close")
                stopped = xrm.rot.spin.set(0)
                if cam.acquire.get(use_monitor=False) != 0:
                    cam.acquire.put(0, wait=True)
                closed.wait(ARM_TIMEOUT_S)
                stopped.wait(ARM_TIMEOUT_S + 4 * xrm.rot.acceleration.get())
            except Exception as exc:  # noqa: BLE001
                error = error or exc
            self._unwatch()
            fired = int(pso.fired.get(use_monitor=False))
            missed = int(cam.missed_triggers.get(use_monitor=False)) - self._missed_before
            if missed and error is None:
                error = RuntimeError(
                    f"{cam.name}: missed {missed} of {fired} PSO triggers (sensor busy): the rotation is too "
                    "fast for the exposure and readout; lower the velocity or the exposure"
                )
            imaged = self._imaged_with_beam(fired)
            self._ended.set()
        self.flyer._segment_ended(self, imaged, fired, error)


def move_to(motor, target: float, *, velocity: float | None = None, margin_s: float = ARM_TIMEOUT_S) -> None:
    """Move ``motor`` to ``target`` (at ``velocity`` if given, then VELO is restored) and wait.

    The wait has a timeout from distance, speed and acceleration. ophyd can lose a
    move's done callback (bluesky/ophyd#782); a move that timed out but sits at its
    target with DMOV=1 has arrived, and says so in the log.
    """
    normal = motor.velocity.get()
    speed = normal if velocity is None else min(velocity, motor.max_velocity.get())
    timeout = abs(target - motor.position) / max(speed, 1e-9) + 2 * motor.acceleration.get() + margin_s
    if speed != normal:
        motor.velocity.set(speed).wait(margin_s)
    try:
        motor.set(target).wait(timeout)
    except WaitTimeoutError:
        arrived = abs(motor.position - target) <= 2 * abs(motor.motor_resolution.get() or 1e-4)
        if not (arrived and motor.motor_done_move.get(use_monitor=False) == 1):
            raise
        log.warning("%s reached %g but its move status never finished (ophyd done-callback race)", motor.name, target)
    finally:
        if speed != normal:
            motor.velocity.set(normal).wait(margin_s)


def fly_velocity(step_deg: float, min_period_s: float, max_velocity: float, fraction: float) -> float:
    """The fastest rotation speed (deg/s) at which the camera images every grid angle.

    One grid step must take at least the camera's shortest frame period; ``fraction``
    (< 1) leaves margin for encoder quantisation. Capped at the stage's max velocity.
    """
    if min_period_s <= 0 or not math.isfinite(min_period_s):
        raise ValueError(f"the camera's shortest frame period {min_period_s} s is not usable")
    return min(abs(step_deg) / min_period_s * fraction, max_velocity)
