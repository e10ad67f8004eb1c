"""In-situ mechanical loading: tomograms of a specimen held at a series of loads, or while it is loaded.

Both plans end cleanly when the loading cell stops on its force limit or the specimen
fails (a sudden force drop): the tomograms taken so far are complete, the run closes
normally with the reason in the stop document, and the crosshead is stopped and its
load hold ended. Any other exit (abort, error) also stops the crosshead and ends the
hold, so no load stays on a specimen nobody watches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import FailedStatus, MsgGenerator

from ..config import Config
from ..devices import Instrument
from ..devices.flyer import AngleGrid
from ..devices.loadcell import LoadCellAlarm
from . import validation as check
from .context import ScanContext, book_dose, check_extent, prepare_scan, scan_metadata, scan_run, take_instrument
from .errors import PlanParameterError
from .registry import registered
from .series import merged_grid
from .stubs import announce
from .subject import Subject
from .tomo import angle_grid, fly_beam_time_s, fly_range_limits, fly_settings, fly_tomogram, tomogram_range_deg

log = logging.getLogger(__name__)


def end_hold(xrm: Instrument) -> MsgGenerator[None]:
    """Stop the crosshead and end the load hold (as an operator's STOP: ``stop()`` without success)."""
    yield from bps.stop(xrm.load)


def _check_specimen(xrm: Instrument) -> None:
    if xrm.load.specimen_state.get() != "Intact":
        raise PlanParameterError("specimen", "the mounted specimen has failed",
                                 "mount a new specimen (load.mount_specimen())")
    if xrm.load.alarm.get() != "No alarm":
        raise PlanParameterError("load", f"the loading cell's alarm is latched: {xrm.load.alarm_message.get()}",
                                 "clear it (load.clear_alarm()) after checking the specimen")


def _scan_tomogram(context: ScanContext, grid: AngleGrid, velocity: float, *, time_point: int,
                   force_n: float) -> MsgGenerator[None]:
    """One fly tomogram at the present load, flats before taken at the start of the run."""
    started = time.time()
    frames, flown = yield from fly_tomogram(context, grid, velocity)
    yield from announce(context.camera)
    yield from context.emit_tomogram(projections=frames, grid=flown, start_time=started,
                                     flats_before=context.frame_range("flats"), time_point=time_point, force_n=force_n)


@registered
def insitu_loading(
    xrm: Instrument,
    *,
    loads_n: Sequence[float] = (2.0, 5.0, 10.0),
    hold_s: float = 0.0,
    unload_at_end: bool = True,
    projections: int = 360,
    range_deg: float | None = None,
    start_deg: float = 0.0,
    exposure_s: float = 0.005,
    binning: int = 4,
    kv: float = 60.0,
    power_w: float = 10.0,
    velocity: float | None = None,
    darks: int | None = None,
    flats: int | None = None,
    subject: Subject | Mapping[str, Any] | None = None,
    config: Config,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Step-hold-scan: for each load, load until the force is stable, hold ``hold_s`` more, take a fly tomogram.

    Parameters
    ----------
    loads_n : sequence of float
        Loads to hold, in order (N), each below the loading cell's force limit.
    hold_s : float
        Extra hold at each load once the force is stable (s).
    unload_at_end : bool
        Unload to 0 N after the last load step.
    """
    force_limit = float(xrm.load.force_limit.get())
    loads = check.loads(list(loads_n) if isinstance(loads_n, (tuple, list)) else loads_n, force_limit)
    hold_s = check.number("hold_s", hold_s, low=0, unit="s")
    grid = angle_grid(start_deg, tomogram_range_deg(range_deg, config), projections)
    _check_specimen(xrm)
    context = prepare_scan(xrm, "insitu_loading", config=config, kv=kv, power_w=power_w,
                                       exposure_s=exposure_s, binning=binning, darks=darks, flats=flats,
                                       flats_when="before", subject=subject, in_vivo=False)
    min_period = yield from take_instrument(context)
    velocity = fly_settings(xrm, context, grid, velocity, min_period)
    fly_range_limits(xrm, context, grid, velocity)
    tomogram_s = fly_beam_time_s(xrm, grid, velocity)
    check_extent(context, projections=len(loads) * grid.count, flat_sets=1,
                 duration_s=len(loads) * (tomogram_s + hold_s))
    dose = book_dose(context, len(loads), tomogram_s)
    outcome: dict[str, str] = {}

    def body() -> MsgGenerator[None]:
        yield from context.darks()
        yield from context.flats()
        for step, force in enumerate(loads):
            try:
                yield from bps.mv(xrm.load, force)
            except FailedStatus as exc:
                if not isinstance(exc.__cause__, LoadCellAlarm):
                    raise
                outcome["reason"] = f"loading ended at step {step} ({force:g} N): {exc.__cause__}"
                break
            if hold_s:
                yield from bps.sleep(hold_s)
            yield from bps.trigger_and_read([xrm.load], name="loading")
            yield from _scan_tomogram(context, grid, velocity, time_point=step, force_n=force)
        if "reason" in outcome:
            yield from bps.trigger_and_read([xrm.load], name="loading")
            yield from end_hold(xrm)
        elif unload_at_end:
            yield from bps.mv(xrm.load, 0.0)
            yield from end_hold(xrm)

    scan = scan_metadata("insitu_loading", grid, context.acquisition, loads_n=loads, hold_s=hold_s,
                         velocity_deg_s=velocity)
    plan = scan_run(context, body, scan=scan, dose=dose, md=md, outcome=outcome)
    return (yield from bpp.finalize_wrapper(plan, _release_load(xrm, outcome)))


@registered
def continuous_loading(
    xrm: Instrument,
    *,
    target_n: float = 30.0,
    speed_mm_per_min: float = 0.1,
    max_tomograms: int = 20,
    projections: int = 180,
    range_deg: float | None = None,
    exposure_s: float = 0.005,
    binning: int = 4,
    kv: float = 60.0,
    power_w: float = 10.0,
    velocity: float | None = None,
    darks: int | None = None,
    flats: int | None = None,
    subject: Subject | Mapping[str, Any] | None = None,
    config: Config,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Load continuously towards ``target_n`` at ``speed_mm_per_min`` while taking back-to-back tomograms.

    Each tomogram is tagged with the force at its start (every frame also carries the
    force at mid-exposure). Ends when the target is reached, the specimen fails or the
    force limit stops the cell, or after ``max_tomograms``.

    Parameters
    ----------
    target_n : float
        Force to load towards (N).
    speed_mm_per_min : float
        Crosshead speed (mm/min).
    max_tomograms : int
        Tomograms at most while loading.
    """
    force_limit = float(xrm.load.force_limit.get())
    (target,) = check.loads([target_n], force_limit)
    low, high = xrm.load.speed.limits
    speed = check.number("speed_mm_per_min", speed_mm_per_min, low=low, high=high, unit="mm/min")
    max_tomograms = check.count("max_tomograms", max_tomograms, 1, what="tomograms")
    grid = angle_grid(0.0, tomogram_range_deg(range_deg, config), projections)
    _check_specimen(xrm)
    context = prepare_scan(xrm, "continuous_loading", config=config, kv=kv, power_w=power_w,
                                       exposure_s=exposure_s, binning=binning, darks=darks, flats=flats,
                                       flats_when="before", subject=subject, in_vivo=False)
    min_period = yield from take_instrument(context)
    velocity = fly_settings(xrm, context, grid, velocity, min_period)
    span = grid.step_deg * grid.count
    grids = [AngleGrid(grid.start_deg + k * span, grid.step_deg, grid.count) for k in range(max_tomograms)]
    fly_range_limits(xrm, context, merged_grid(grids), velocity)
    tomogram_s = fly_beam_time_s(xrm, grid, velocity)
    check_extent(context, projections=max_tomograms * grid.count, flat_sets=1, duration_s=max_tomograms * tomogram_s)
    dose = book_dose(context, max_tomograms, tomogram_s)
    outcome: dict[str, str] = {}

    def body() -> MsgGenerator[None]:
        yield from context.darks()
        yield from context.flats()
        yield from bps.mv(xrm.load.speed, speed)
        # Started outside the RunEngine's status groups on purpose: the specimen failing under the
        # load is this plan's expected end, and a failed Status in a group would be thrown into the
        # tomogram under way. The finalize step stops the cell whatever happens.
        loading = xrm.load.set(target)
        for index, tomogram_grid in enumerate(grids):
            force = float(xrm.load.force.get())
            yield from _scan_tomogram(context, tomogram_grid, velocity, time_point=index, force_n=force)
            yield from bps.trigger_and_read([xrm.load], name="loading")
            if loading.done:
                break
        if loading.done and not loading.success:
            outcome["reason"] = f"loading ended: {loading.exception()}"
        yield from end_hold(xrm)

    scan = scan_metadata("continuous_loading", grid, context.acquisition, target_n=target,
                         speed_mm_per_min=speed, max_tomograms=max_tomograms, velocity_deg_s=velocity)
    plan = scan_run(context, body, scan=scan, dose=dose, md=md, outcome=outcome)
    return (yield from bpp.finalize_wrapper(plan, _release_load(xrm, outcome)))


def _release_load(xrm: Instrument, outcome: dict[str, str]) -> MsgGenerator[None]:
    """Whatever happened: no crosshead left moving, no hold left on."""
    yield from end_hold(xrm)
    if "reason" in outcome:
        log.warning("%s", outcome["reason"])
