"""What one scan run needs besides its plan: camera file, flyer, dose bookkeeping, metadata.

:func:`prepare_scan` validates what every tomography plan shares (source output,
exposure, binning, darks/flats, subject, dose budget) before anything moves, and
:func:`scan_run` wraps a plan body in the run: start document, camera file, beam guard,
suspenders, and a finalize step that closes the shutter, keeps every acquired frame,
closes the file and books the dose, whatever happened.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import MsgGenerator
from ophyd import Signal

from .. import __version__
from ..config import Config
from ..devices import Instrument
from ..devices.camera_control import CameraControl, ReadoutSettings
from ..devices.capture import FrameCapture
from ..devices.flyer import TomoFlyer
from ..devices.scan_camera import CameraFile, ScanCamera
from ..devices.signals import CommandRefused
from ..documents import FRAME_STREAMS, TOMOGRAM_KEYS, TOMOGRAMS_STREAM
from . import validation as check
from .dose import DoseLedger, DoseMeter, DoseModel
from .errors import InstrumentNotReady, PlanParameterError
from .safety import BeamGuard, safety_suspenders
from .stubs import announce, shutter, take_darks, take_flats
from .subject import Subject, parse_subject

FLATS_WHEN = ("before", "after", "both", "none")


def tomogram_signals() -> dict[str, Signal]:
    """One soft Signal per `tomograms` key, named exactly as the key (read as one event per tomogram)."""
    return {key: Signal(name=key, value=value) for key, value in TOMOGRAM_KEYS.items()}


@dataclass(frozen=True)
class Acquisition:
    """Validated settings shared by every tomography plan."""

    kv: float
    power_w: float
    exposure_s: float
    binning: int
    darks: int
    flats: int
    flats_when: str
    flats_axis: str
    flats_offset_mm: float


@dataclass
class ScanContext:
    """The per-run machinery of a scan (built by :func:`prepare_scan`)."""

    xrm: Instrument
    config: Config
    plan_name: str
    acquisition: Acquisition
    subject: Subject | None
    camera: ScanCamera
    flyer: TomoFlyer
    dose_model: DoseModel
    ledger: DoseLedger
    dose_estimate_gy: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Signal] = field(default_factory=tomogram_signals)
    meter: DoseMeter | None = None
    tomograms: int = 0
    delivered_gy: float = 0.0
    run_uid: str = ""

    @property
    def capture(self) -> FrameCapture:
        """The run's camera file and its frame bookkeeping."""
        return self.camera.capture

    def darks(self) -> MsgGenerator[None]:
        a = self.acquisition
        yield from take_darks(self.xrm, self.camera, a.darks, a.exposure_s)

    def flats(self) -> MsgGenerator[None]:
        a = self.acquisition
        yield from take_flats(self.xrm, self.camera, a.flats, a.exposure_s, a.flats_axis, a.flats_offset_mm,
                              self.meter)

    def frame_range(self, stream: str) -> tuple[int, int]:
        try:
            return self.capture.frame_range(stream)
        except KeyError:
            return -1, -1

    def emit_tomogram(self, *, projections: tuple[int, int], grid, start_time: float, flats_before: tuple[int, int],
                      flats_after: tuple[int, int] = (-1, -1), time_point: int | None = None,
                      force_n: float = float("nan")):
        """One `tomograms` event for the tomogram just taken."""
        values = dict(
            tomogram=self.tomograms, time_point=self.tomograms if time_point is None else time_point,
            file=str(self.capture.path), projections_start=projections[0], projections_stop=projections[1],
            darks_start=self.frame_range("darks")[0], darks_stop=self.frame_range("darks")[1],
            flats_before_start=flats_before[0], flats_before_stop=flats_before[1],
            flats_after_start=flats_after[0], flats_after_stop=flats_after[1],
            grid_start_deg=grid.start_deg, grid_step_deg=grid.step_deg, grid_count=grid.count,
            start_time=start_time, end_time=time.time(), force_n=force_n,
        )
        for name, value in values.items():
            self.record[name].put(value)
        self.tomograms += 1
        yield from bps.trigger_and_read(list(self.record.values()), name=TOMOGRAMS_STREAM)
        yield from bps.checkpoint()


def _energy_kev(anode: str) -> float:
    """K-alpha1 line of the anode (keV)."""
    import xraydb  # its database and scipy take 0.8 s to load: not before a scan's parameters are checked

    return xraydb.xray_lines(anode)["Ka1"].energy / 1000.0


def instrument_metadata(xrm: Instrument, config: Config, acquisition: Acquisition) -> dict[str, Any]:
    """Geometry, source and detector of the scan, for the start document."""
    cam = xrm.det.cam
    geometry = config.geometry
    if geometry.kind == "cone":
        magnification = geometry.source_detector_mm / geometry.source_sample_mm
    else:
        magnification = geometry.objective_magnification
    pixel_um = config.detector.pixel_um * acquisition.binning
    anode = xrm.source.anode.get() or config.source.anode
    return {
        "geometry": {
            "type": config.geometry.kind, "source_sample_mm": geometry.source_sample_mm,
            "source_detector_mm": geometry.source_detector_mm, "magnification": magnification,
            "detector_pixel_um": pixel_um, "voxel_size_um": pixel_um / magnification,
            "rows": int(cam.array_size.array_size_y.get()), "cols": int(cam.array_size.array_size_x.get()),
        },
        "source": {
            "anode": anode, "kv": acquisition.kv, "power_w": acquisition.power_w,
            "spot_um": float(xrm.source.spot.get()), "energy_kev": _energy_kev(anode),
        },
        "detector": {
            "model": cam.model.get(), "exposure_s": acquisition.exposure_s,
            "period_s": float(cam.acquire_period.get()), "binning": acquisition.binning,
            "pixel_encoding": cam.pixel_encoding.get(as_string=True),
        },
    }


def prepare_scan(
    xrm: Instrument,
    plan_name: str,
    *,
    config: Config,
    kv: float,
    power_w: float,
    exposure_s: float,
    binning: int,
    darks: int | None,
    flats: int | None,
    flats_when: str,
    subject: Subject | Mapping[str, Any] | None,
    in_vivo: bool,
) -> ScanContext:
    """Validate the shared parameters and build the run's context (nothing on the instrument changes)."""
    check.instrument_geometry(xrm, config)
    scan = config.scan
    flats_when = check.choice("flats_when", flats_when, FLATS_WHEN)
    acquisition = Acquisition(
        kv=0.0, power_w=0.0, exposure_s=check.exposure(exposure_s, config), binning=check.binning(binning),
        darks=check.count("darks", scan.darks if darks is None else darks, 0),
        flats=check.count("flats", scan.flats if flats is None else flats, 0),
        flats_when=flats_when, flats_axis=scan.flats_axis, flats_offset_mm=scan.flats_offset_mm,
    )
    parsed_subject = parse_subject(subject, required=in_vivo)
    kv, power_w = check.source_output(xrm, kv, power_w)
    acquisition = dataclasses.replace(acquisition, kv=kv, power_w=power_w)
    if acquisition.flats and flats_when != "none":
        axis = getattr(xrm, acquisition.flats_axis)
        check.within_limits(xrm, acquisition.flats_axis, [axis.position + acquisition.flats_offset_mm],
                            "flats_offset_mm")
    control = CameraControl(xrm.det, delivery_timeout_s=scan.frame_stall_timeout_s)
    capture = FrameCapture(xrm.det, config.paths.data_dir, flush_frames=scan.flush_frames,
                           delivery_timeout_s=scan.frame_stall_timeout_s)
    camera = ScanCamera(control, capture)
    flyer = TomoFlyer(xrm, camera, taxi_margin_deg=scan.taxi_margin_deg)
    context = ScanContext(
        xrm=xrm, config=config, plan_name=plan_name, acquisition=acquisition, subject=parsed_subject,
        camera=camera, flyer=flyer, dose_model=DoseModel.from_config(config), ledger=DoseLedger(config.dose.ledger),
    )
    return context


def take_instrument(context: ScanContext) -> MsgGenerator[float]:
    """Take the instrument for this scan, then apply its readout settings; returns the shortest frame period (s).

    The lock (``xrm.wd``: one scan at a time, and the heartbeat of the dead man's switch)
    comes before anything on the instrument changes; a scan of another process holding
    it is a refusal that names it. The plans' speed checks need the frame period, so the
    readout settings come next, before anything moves.
    """
    try:
        yield from bps.stage(context.xrm.wd)
    except CommandRefused:
        reason = context.xrm.wd.message.get(use_monitor=False)  # the IOC's refusal, with its fix
        raise InstrumentNotReady("instrument", "another process holds it", reason) from None
    a = context.acquisition
    yield from bps.prepare(context.camera, ReadoutSettings(a.binning, a.exposure_s), wait=True)
    return float((yield from bps.rd(context.xrm.det.cam.acquire_period)))


def scan_metadata(kind: str, grid, acquisition: Acquisition, **extra: Any) -> dict[str, Any]:
    """The start document's ``scan``: the grid and acquisition settings every plan shares, then ``extra``."""
    a = acquisition
    return {
        "kind": kind, "start_deg": grid.start_deg, "range_deg": grid.step_deg * grid.count,
        "projections": grid.count, "exposure_s": a.exposure_s, "binning": a.binning, "darks": a.darks,
        "flats": a.flats, "flats_when": a.flats_when, "flats_axis": a.flats_axis,
        "flats_offset_mm": a.flats_offset_mm, **extra,
    }


def check_extent(context: ScanContext, *, projections: int, flat_sets: int, duration_s: float) -> None:
    """Refuse a scan that would outlast ``scan.max_duration_s`` or overflow the data directory, before it moves.

    ``projections`` frames plus the darks and ``flat_sets`` sets of flats, at the frame
    size the readout settings give, must fit the free space of the data directory with
    ``scan.free_space_margin`` to spare.
    """
    scan, a, cam = context.config.scan, context.acquisition, context.xrm.det.cam
    if duration_s > scan.max_duration_s:
        raise PlanParameterError(
            "projections", f"the scan would take about {duration_s / 3600:.1f} h, more than scan.max_duration_s "
            f"({scan.max_duration_s / 3600:.1f} h)", "take fewer projections or tomograms, or turn faster",
        )
    frames = projections + a.darks + a.flats * flat_sets
    frame_bytes = int(cam.array_size.array_size_x.get()) * int(cam.array_size.array_size_y.get()) * 2
    needed = frames * frame_bytes * scan.free_space_margin
    directory = context.config.paths.data_path
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise PlanParameterError(
            "projections", f"{frames} frames need {needed / 1e9:.1f} GB with margin, but {directory} has "
            f"{free / 1e9:.1f} GB free", "free space in the data directory, or take fewer or more binned frames",
        )


def book_dose(context: ScanContext, tomograms: int, beam_time_per_tomogram_s: float) -> dict[str, Any]:
    """Estimate the scan's dose and refuse it if the subject's budget cannot take it."""
    a = context.acquisition
    rate = context.dose_model.rate_gy_per_s(a.kv, a.power_w)
    per_tomogram = rate * beam_time_per_tomogram_s
    estimate = per_tomogram * tomograms
    budget = context.config.dose.budget_gy
    delivered = 0.0
    if context.subject is not None:
        delivered = context.ledger.check_budget(context.subject.subject_id, estimate, budget)
    context.dose_estimate_gy = estimate
    return {
        "rate_gy_per_s": rate, "per_tomogram_gy": per_tomogram, "estimate_gy": estimate, "budget_gy": budget,
        "delivered_before_gy": delivered, "remaining_gy": budget - delivered,
    }


def scan_run(context: ScanContext, body: Callable[[], MsgGenerator], *, scan: dict[str, Any], dose: dict[str, Any],
             md: Mapping[str, Any] | None = None, in_vivo: bool = False,
             outcome: Mapping[str, str] | None = None) -> MsgGenerator[str]:
    """Run ``body()`` as one run with the camera file open, the beam guarded and the dose booked.

    ``md`` (with the ``plan_args`` the plan registry records) goes into the start
    document after ``plan_name``. ``outcome["reason"]``, if the body sets it, ends the
    run early but cleanly and goes into the stop document (e.g. the specimen failed
    under load).

    Safety rides on bluesky's own stop handling: the beam guard and the camera are
    staged, so the RunEngine's pause calls the guard's ``pause`` (fly segment ended,
    shutter closed) and any end of the run (abort included) their ``unstage``; the
    shutter, moved with ``set``, is stopped (closed) by the RunEngine as well. The
    finalize step only keeps the data: every frame in the file announced, the file
    closed, the dose booked.
    """
    xrm, camera, capture = context.xrm, context.camera, context.capture
    a = context.acquisition
    guard = BeamGuard(xrm, context.flyer)
    metadata = {
        "plan_name": context.plan_name, "scan": scan, "dose": dose,
        "nanoscope_daq": __version__, "data_dir": str(context.config.paths.data_path),
        **instrument_metadata(xrm, context.config, a),
    }
    if context.subject is not None:
        metadata["subject"] = context.subject.as_metadata()
    metadata.update(md or {})
    context.metadata = metadata

    def recover() -> MsgGenerator[None]:
        """After a suspension: beam back on, fresh flats, then on with the interrupted stream."""
        stream = capture.stream
        yield from bps.mv(xrm.source, (a.kv, a.power_w))
        if a.flats:
            yield from context.flats()
        yield from shutter(xrm, "open")
        if stream is not None and stream != capture.stream:
            capture.select(stream)

    def run() -> MsgGenerator[str]:
        uid = context.run_uid = yield from bps.open_run(metadata)
        for stream in FRAME_STREAMS:
            yield from bps.declare_stream(camera, name=stream, collect=True)
        yield from bps.stage(camera)
        yield from bps.prepare(camera, CameraFile(f"{metadata['plan_name']}_{uid[:8]}"), wait=True)
        yield from bps.kickoff(camera, wait=True)
        context.meter = DoseMeter(xrm.source.shutter.status, dose["rate_gy_per_s"])
        context.meter.start()
        yield from bps.stage(guard)
        yield from bps.mv(xrm.source, (a.kv, a.power_w))
        yield from body()
        yield from shutter(xrm, "close")
        yield from bps.unstage(guard)
        yield from keep_frames()
        yield from bps.unstage(xrm.wd)
        yield from bps.close_run(reason=(outcome or {}).get("reason", ""))
        return uid

    def keep_frames() -> MsgGenerator[None]:
        """Every acquired frame in the file and announced, the file closed, the dose booked."""
        try:
            yield from bps.complete(camera, wait=True)
        finally:
            yield from announce(camera)
        book()

    def book() -> None:
        meter = context.meter
        if meter is None:
            return
        context.meter = None
        context.delivered_gy = meter.stop()
        if context.subject is not None:
            context.ledger.record(context.subject.subject_id, context.run_uid, context.plan_name,
                                  context.dose_estimate_gy, context.delivered_gy)

    def cleanup() -> MsgGenerator[None]:
        yield from bps.unstage(guard)  # beam off the animal before anything else
        if context.meter is not None:  # the run ended before keeping its frames
            yield from keep_frames()

    suspenders = safety_suspenders(xrm, in_vivo=in_vivo, recover=recover)
    return (yield from bpp.finalize_wrapper(bpp.suspend_wrapper(run(), suspenders), cleanup()))
