"""The 4D in-vivo scan: a time series of fly tomograms of a living mouse."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import MsgGenerator

from ..config import Config
from ..devices import Instrument
from ..devices.flyer import AngleGrid
from . import validation as check
from .context import book_dose, check_extent, prepare_scan, scan_metadata, scan_run, take_instrument
from .errors import PlanParameterError
from .registry import registered
from .stubs import announce
from .subject import Subject
from .tomo import GATING, angle_grid, fly_beam_time_s, fly_range_limits, fly_settings, fly_tomogram, tomogram_range_deg

ROTATIONS = ("continuous", "back-and-forth")


@registered
def time_series(
    xrm: Instrument,
    *,
    subject: Subject | Mapping[str, Any] | None = None,
    tomograms: int = 3,
    interval_s: float = 0.0,
    rotation: str = "continuous",
    flats_every: int = 0,
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
    gating: str = "none",
    config: Config,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """``tomograms`` fly tomograms of one animal, each tagged with its time point.

    ``interval_s`` = 0 takes them back to back (the shutter stays open); otherwise one
    starts every ``interval_s`` seconds with the shutter closed in between.
    ``rotation="continuous"`` keeps turning one way (back to back: one uninterrupted
    rotation, tomogram k covering start + k * range); ``"back-and-forth"`` reverses after
    each tomogram. Flats are taken before the first tomogram, after the last, and after
    every ``flats_every`` tomograms (0: only those two). Needs ``subject``.

    Parameters
    ----------
    tomograms : int
        Tomograms in the time series.
    interval_s : float
        Start a tomogram every ``interval_s`` seconds (0: back to back).
    rotation : str
        'continuous' (one way) or 'back-and-forth' (reverse after each tomogram).
    flats_every : int
        Flats after every this many tomograms (0: only before the first and after the last).
    """
    tomograms = check.count("tomograms", tomograms, 1, what="tomograms")
    interval_s = check.number("interval_s", interval_s, low=0, unit="s")
    rotation = check.choice("rotation", rotation, ROTATIONS)
    flats_every = check.count("flats_every", flats_every, 0, what="tomograms")
    gating = check.choice("gating", gating, GATING)
    if gating == "prospective":
        raise PlanParameterError("gating", "a fly time series cannot wait for the gate at each angle",
                                 "use gating='retrospective' (every frame tagged with its phase)")
    first = angle_grid(start_deg, tomogram_range_deg(range_deg, config), projections)
    context = prepare_scan(xrm, "time_series", config=config, kv=kv, power_w=power_w,
                                       exposure_s=exposure_s, binning=binning, darks=darks, flats=flats,
                                       flats_when="both", subject=subject, in_vivo=True)
    min_period = yield from take_instrument(context)
    velocity = fly_settings(xrm, context, first, velocity, min_period)
    grids = tomogram_grids(first, tomograms, rotation)
    for grid in grids:
        fly_range_limits(xrm, context, grid, velocity)
    beam_time = fly_beam_time_s(xrm, first, velocity)
    tomogram_s = beam_time + (context.acquisition.flats * min_period if flats_every else 0.0)
    if interval_s and interval_s < tomogram_s:
        raise PlanParameterError(
            "interval_s", f"{interval_s:g} s is shorter than one tomogram ({tomogram_s:.1f} s with run-up)",
            f"give at least {tomogram_s:.1f} s, or 0 for back-to-back tomograms",
        )
    series_s = max(interval_s * (tomograms - 1) + tomogram_s, tomograms * tomogram_s)
    check_extent(context, projections=tomograms * first.count, flat_sets=tomograms // max(flats_every, 1) + 2,
                 duration_s=series_s)
    dose = book_dose(context, tomograms, beam_time)
    a = context.acquisition
    back_to_back = interval_s == 0

    def blocks() -> list[list[int]]:
        """Tomograms grouped between flats (flats_every); continuous back-to-back blocks fly as one grid."""
        size = flats_every or tomograms
        return [list(range(i, min(i + size, tomograms))) for i in range(0, tomograms, size)]

    def body() -> MsgGenerator[None]:
        yield from context.darks()
        yield from context.flats()
        series_start = time.monotonic()
        flats_before = context.frame_range("flats")
        for block in blocks():
            one_grid = back_to_back and rotation == "continuous"
            runs = [block] if one_grid else [[k] for k in block]
            for run in runs:
                if not back_to_back:
                    wait = series_start + run[0] * interval_s - time.monotonic()
                    if wait > 0:
                        yield from bps.sleep(wait)  # the flyer closed the shutter after the last one
                started = time.time()
                grid = merged_grid([grids[k] for k in run])
                (start, _), flown = yield from fly_tomogram(context, grid, velocity)
                turns = flown.start_deg - grid.start_deg
                yield from announce(context.camera)
                last_block_tomogram = run[-1] == block[-1]
                flats_after = (-1, -1)
                if last_block_tomogram:
                    yield from context.flats()
                    flats_after = context.frame_range("flats")
                for offset, k in enumerate(run):
                    first_frame = start + offset * grids[k].count
                    yield from context.emit_tomogram(
                        projections=(first_frame, first_frame + grids[k].count), grid=grids[k].shifted(turns),
                        start_time=started,
                        flats_before=flats_before, flats_after=flats_after if k == run[-1] else (-1, -1),
                        time_point=k,
                    )
                if last_block_tomogram:
                    flats_before = flats_after

    scan = scan_metadata("time_series", first, a, tomograms=tomograms, interval_s=interval_s, rotation=rotation,
                         flats_every=flats_every, velocity_deg_s=velocity, period_s=min_period, gating=gating)
    return (yield from scan_run(context, body, scan=scan, dose=dose, md=md, in_vivo=True))


def tomogram_grids(first: AngleGrid, tomograms: int, rotation: str) -> list[AngleGrid]:
    """The angle grid of each tomogram: continuing one way, or reversing each time."""
    span = first.step_deg * first.count
    if rotation == "continuous":
        return [AngleGrid(first.start_deg + k * span, first.step_deg, first.count) for k in range(tomograms)]
    grids = []
    for k in range(tomograms):
        if k % 2 == 0:
            grids.append(first)
        else:  # the same angles, turning back from the far end
            grids.append(AngleGrid(first.start_deg + span, -first.step_deg, first.count))
    return grids


def merged_grid(grids: list[AngleGrid]) -> AngleGrid:
    """Consecutive same-direction grids as one uninterrupted grid."""
    return AngleGrid(grids[0].start_deg, grids[0].step_deg, sum(grid.count for grid in grids))
