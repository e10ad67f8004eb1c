"""Darks and flats, step-and-shoot and fly tomography."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import MsgGenerator, new_uid

from ..config import Config
from ..devices import Instrument
from ..devices.camera_control import FrameTrigger
from ..devices.flyer import AngleGrid, fly_velocity, taxi_distance_deg
from . import validation as check
from .context import ScanContext, book_dose, check_extent, prepare_scan, scan_metadata, scan_run, take_instrument
from .errors import PlanParameterError
from .registry import registered
from .stubs import acquire, announce, shutter, wait_for_status
from .subject import Subject

GATING = ("none", "prospective", "retrospective")


@registered
def darks_flats(
    xrm: Instrument,
    *,
    darks: int | None = None,
    flats: int | None = None,
    exposure_s: float = 0.01,
    binning: int = 4,
    kv: float = 60.0,
    power_w: float = 10.0,
    config: Config,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Darks (shutter closed) then flats (specimen moved out and back), each its own stream."""
    context = prepare_scan(xrm, "darks_flats", config=config, kv=kv, power_w=power_w, exposure_s=exposure_s,
                           binning=binning, darks=darks, flats=flats, flats_when="before", subject=None,
                           in_vivo=False)
    a = context.acquisition
    if a.darks + a.flats == 0:
        raise PlanParameterError("darks/flats", "both are 0, so there is nothing to take", "ask for at least one frame")
    min_period = yield from take_instrument(context)
    check_extent(context, projections=0, flat_sets=1, duration_s=(a.darks + a.flats) * min_period)
    dose = book_dose(context, 0, 0.0)

    def body() -> MsgGenerator[None]:
        yield from context.darks()
        yield from context.flats()

    scan = {"kind": "darks_flats", "darks": a.darks, "flats": a.flats, "exposure_s": a.exposure_s,
            "binning": a.binning}
    return (yield from scan_run(context, body, scan=scan, dose=dose, md=md))


def tomogram_range_deg(range_deg: float | None, config: Config) -> object:
    """``range_deg``, or when None the range one tomogram needs in the instrument's geometry.

    Parallel beam: 180 deg. Cone beam: a short scan of 180 deg plus the fan angle the
    detector subtends from the source (what FDK reconstructs), rounded up to a degree;
    a shorter explicit cone-beam range is refused with the range to use.
    """
    needed = 180.0 if config.geometry.kind != "cone" else float(math.ceil(180.0 + _fan_angle_deg(config)))
    if range_deg is None:
        return needed
    span = abs(check.number("range_deg", range_deg, unit="deg"))
    if config.geometry.kind == "cone" and 0 < span < needed:
        raise PlanParameterError(
            "range_deg", f"{span:g} deg is shorter than cone-beam reconstruction (FDK) needs: 180 deg + the fan "
            f"angle ({_fan_angle_deg(config):.1f} deg)",
            f"give at least {needed:g} deg (leave range_deg out for exactly that) or 360")
    return range_deg


def _fan_angle_deg(config: Config) -> float:
    """The full fan angle the detector subtends from the source."""
    half_width_mm = config.detector.pixels_x * config.detector.pixel_um / 1000 / 2
    return 2 * math.degrees(math.atan(half_width_mm / config.geometry.source_detector_mm))


def angle_grid(start_deg: object, range_deg: object, projections: object) -> AngleGrid:
    """``projections`` angles over ``range_deg`` from ``start_deg``.

    The endpoint is excluded; a negative range turns backwards.
    """
    count = check.count("projections", projections, 2, what="projections")
    start = check.number("start_deg", start_deg, unit="deg")
    span = check.number("range_deg", range_deg, unit="deg")
    if span == 0 or abs(span) > 3600:
        raise PlanParameterError("range_deg", f"{span:g} deg is not a usable angular range",
                                 "give a non-zero range up to 3600 deg (180 or 360 for one tomogram)")
    return AngleGrid(start, span / count, count)


def _flats_before(context: ScanContext, flats_when: str) -> MsgGenerator[tuple[int, int]]:
    """Flats before the projections (as the plan asked); returns the frame range of the flats taken last."""
    if flats_when in ("before", "both"):
        yield from context.flats()
    return context.frame_range("flats")


def _flats_after(context: ScanContext, flats_when: str) -> MsgGenerator[tuple[int, int]]:
    """Flats after the projections (as the plan asked); returns their frame range, or (-1, -1)."""
    if flats_when not in ("after", "both"):
        return (-1, -1)
    yield from context.flats()
    return context.frame_range("flats")


@registered
def step_tomo(
    xrm: Instrument,
    *,
    projections: int = 180,
    range_deg: float | None = None,
    start_deg: float = 0.0,
    exposure_s: float = 0.01,
    binning: int = 4,
    kv: float = 60.0,
    power_w: float = 10.0,
    darks: int | None = None,
    flats: int | None = None,
    flats_when: str = "both",
    gating: str = "none",
    subject: Subject | Mapping[str, Any] | None = None,
    config: Config,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Step-and-shoot tomography: move to each angle, stop, take one frame.

    ``gating="prospective"`` takes each frame only when the respiratory gate has just
    opened (end-expiration) and re-takes it if the gate closed during the exposure;
    ``"retrospective"`` tags frames for later binning. Gated scans are in vivo: they
    need ``subject``.
    """
    gating = check.choice("gating", gating, GATING)
    in_vivo = gating != "none"
    grid = angle_grid(start_deg, tomogram_range_deg(range_deg, config), projections)
    context = prepare_scan(xrm, "step_tomo", config=config, kv=kv, power_w=power_w,
                                       exposure_s=exposure_s, binning=binning, darks=darks, flats=flats,
                                       flats_when=flats_when, subject=subject, in_vivo=in_vivo)
    min_period = yield from take_instrument(context)
    check.within_limits(xrm, "rot", [grid.start_deg, grid.end_deg], "range_deg")
    rot = xrm.rot
    move_s = abs(grid.step_deg) / rot.velocity.get() + rot.acceleration.get()
    frame_s = move_s + min_period + (60.0 / xrm.physio.rate.get() if gating == "prospective" else 0.0)
    flat_sets = 2 if context.acquisition.flats_when == "both" else int(context.acquisition.flats_when != "none")
    check_extent(context, projections=grid.count, flat_sets=flat_sets, duration_s=grid.count * frame_s)
    dose = book_dose(context, 1, grid.count * frame_s)
    a = context.acquisition
    gate_timeout = context.config.scan.gate_timeout_s

    def frame_at(angle: float) -> MsgGenerator[None]:
        yield from bps.mv(rot, angle)
        # Armed at every angle: flats re-taken after a suspension arm the camera for theirs.
        if gating == "prospective":
            yield from gated_frame(xrm, context, gate_timeout)
        else:
            yield from acquire(context.camera, 1, a.exposure_s)

    def body() -> MsgGenerator[None]:
        yield from context.darks()
        flats_before = yield from _flats_before(context, a.flats_when)
        yield from shutter(xrm, "open")
        context.capture.select("projections")
        start, started = context.capture.expected, time.time()
        for index in range(grid.count):
            yield from bps.checkpoint()
            yield from frame_at(grid.angle(index))
            yield from announce(context.camera)
        projections_range = (start, context.capture.expected)
        yield from announce(context.camera)
        flats_after = yield from _flats_after(context, a.flats_when)
        yield from context.emit_tomogram(projections=projections_range, grid=grid, start_time=started,
                                         flats_before=flats_before, flats_after=flats_after)

    scan = scan_metadata("step", grid, a, gating=gating)
    return (yield from scan_run(context, body, scan=scan, dose=dose, md=md, in_vivo=in_vivo))


def gated_frame(xrm: Instrument, context: ScanContext, gate_timeout_s: float) -> MsgGenerator[None]:
    """A frame inside the respiratory gate: armed, exposed once the gate opens, re-taken if it closed meanwhile."""
    yield from bps.prepare(context.camera, FrameTrigger(1, context.acquisition.exposure_s), wait=True)
    while True:
        yield from wait_for_status(lambda: xrm.physio.wait_for_gate(timeout=gate_timeout_s))
        closed: list[bool] = []

        def on_gate(value, closed=closed, **_) -> None:
            if value == 0:
                closed.append(True)

        cid = xrm.physio.gate.subscribe(on_gate, run=True)  # a gate already closed again counts too
        try:
            yield from bps.trigger(context.camera, wait=True)
        finally:
            xrm.physio.gate.unsubscribe(cid)
        if not closed:
            return


def fly_tomogram(
    context: ScanContext, grid: AngleGrid, velocity: float
) -> MsgGenerator[tuple[tuple[int, int], AngleGrid]]:
    """Image ``grid`` on the fly; announce frames every ``scan.announce_period_s``.

    Returns the frame range and the grid flown (``grid`` shifted by whole turns to
    the stage, see :meth:`TomoFlyer.nearest_turn`).

    Between announcements there is a checkpoint, so a pause resumes at the first angle
    not imaged (the flyer ends its segment on pause and picks up from there on kickoff).
    """
    flyer, capture = context.flyer, context.capture
    position = yield from bps.rd(context.xrm.rot)
    flown = flyer.nearest_turn(grid, velocity, position)
    yield from bps.prepare(flyer, flown, velocity, context.acquisition.exposure_s, wait=True)
    capture.select("projections")
    start = capture.expected
    period = context.config.scan.announce_period_s
    group = new_uid()
    done = False
    while not done:
        yield from announce(context.camera)
        yield from bps.checkpoint()
        yield from bps.kickoff(flyer, wait=True)
        yield from bps.complete(flyer, group=group)
        done = yield from bps.wait(group=group, timeout=period, error_on_timeout=False)
    return (start, capture.expected), flown


def fly_settings(xrm: Instrument, context: ScanContext, grid: AngleGrid, velocity: float | None,
                 min_period_s: float) -> float:
    """The rotation speed of a fly scan (computed when None), checked against camera and stage."""
    vmax = float(xrm.rot.max_velocity.get())
    if velocity is None:
        velocity = fly_velocity(grid.step_deg, min_period_s, vmax, context.config.scan.fly_rate_fraction)
    velocity = check.number("velocity", velocity, low=0, low_open=True, high=vmax, unit="deg/s")
    check.velocity_for_camera(grid.step_deg, velocity, min_period_s, context.acquisition.exposure_s)
    return velocity


def fly_range_limits(xrm: Instrument, context: ScanContext, grid: AngleGrid, velocity: float,
                     parameter: str = "range_deg") -> None:
    """The run-up before and the run-out after the grid stay inside the rotation limits."""
    taxi = taxi_distance_deg(velocity, xrm.rot.acceleration.get(), context.config.scan.taxi_margin_deg)
    check.within_limits(xrm, "rot", [grid.start_deg - grid.direction * taxi, grid.end_deg + grid.direction * taxi],
                        parameter)


def fly_beam_time_s(xrm: Instrument, grid: AngleGrid, velocity: float) -> float:
    """Shutter-open time of one fly tomogram: the grid at speed plus run-up and run-out."""
    acceleration = xrm.rot.acceleration.get()
    return abs(grid.step_deg * grid.count) / velocity + 2 * acceleration


@registered
def fly_tomo(
    xrm: Instrument,
    *,
    projections: int = 900,
    range_deg: float | None = None,
    start_deg: float = 0.0,
    exposure_s: float = 0.005,
    binning: int = 4,
    kv: float = 60.0,
    power_w: float = 10.0,
    velocity: float | None = None,
    darks: int | None = None,
    flats: int | None = None,
    flats_when: str = "both",
    gating: str = "none",
    subject: Subject | Mapping[str, Any] | None = None,
    config: Config,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Fly tomography: continuous rotation, one PSO-triggered frame per grid angle, measured angles recorded.

    ``velocity`` (deg/s) defaults to the fastest the camera keeps up with
    (scan.fly_rate_fraction of one step per shortest frame period). ``gating`` may be
    ``"retrospective"`` (every frame tagged with its respiratory phase; needs ``subject``).
    """
    gating = check.choice("gating", gating, GATING)
    if gating == "prospective":
        raise PlanParameterError("gating", "a fly scan cannot wait for the respiratory gate at each angle",
                                 "use step_tomo(gating='prospective') or gating='retrospective' here")
    in_vivo = gating != "none"
    grid = angle_grid(start_deg, tomogram_range_deg(range_deg, config), projections)
    context = prepare_scan(xrm, "fly_tomo", config=config, kv=kv, power_w=power_w,
                                       exposure_s=exposure_s, binning=binning, darks=darks, flats=flats,
                                       flats_when=flats_when, subject=subject, in_vivo=in_vivo)
    min_period = yield from take_instrument(context)
    velocity = fly_settings(xrm, context, grid, velocity, min_period)
    fly_range_limits(xrm, context, grid, velocity)
    a = context.acquisition
    flat_sets = 2 if a.flats_when == "both" else int(a.flats_when != "none")
    check_extent(context, projections=grid.count, flat_sets=flat_sets,
                 duration_s=fly_beam_time_s(xrm, grid, velocity) + (a.darks + a.flats * flat_sets) * min_period)
    dose = book_dose(context, 1, fly_beam_time_s(xrm, grid, velocity))
    a = context.acquisition

    def body() -> MsgGenerator[None]:
        yield from context.darks()
        flats_before = yield from _flats_before(context, a.flats_when)
        started = time.time()
        projections_range, flown = yield from fly_tomogram(context, grid, velocity)
        yield from announce(context.camera)
        flats_after = yield from _flats_after(context, a.flats_when)
        yield from context.emit_tomogram(projections=projections_range, grid=flown, start_time=started,
                                         flats_before=flats_before, flats_after=flats_after)

    scan = scan_metadata("fly", grid, a, velocity_deg_s=velocity, period_s=min_period, gating=gating)
    return (yield from scan_run(context, body, scan=scan, dose=dose, md=md, in_vivo=in_vivo))
