"""What one camera frame sees: the world's state at mid-exposure, and the rendered pixels.

The cam IOC times each exposure on the simulator clock; at the end of an exposure it
asks :func:`observe` for the instrument's state at mid-exposure (stage angle and
offsets, breathing, load, source) and hands the resulting :class:`Exposure` to a
render thread. Everything here is evaluated at exact clock times, so the event
loop's latency never shows in the data.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from ...hdf5_writer import AttributeInfo
from ...imaging.exposure import Exposure
from ...imaging.imager import Imager
from ...world import World


class FrameType(enum.IntEnum):
    """DESIGN.md image_key: what the frame shows."""

    PROJECTION = 0
    FLAT = 1
    DARK = 2


ATTRIBUTES: dict[str, AttributeInfo] = {
    "RotationAngle": AttributeInfo("Rotation stage angle at mid-exposure", "deg"),
    "EncoderAngle": AttributeInfo(
        "Rotation encoder angle latched by the position-synchronized output (PSO) pulse that "
        "started the exposure; NaN for frames not started by a PSO pulse",
        "deg",
    ),
    "FrameType": AttributeInfo("Image key: 0 projection, 1 flat (sample out of the field), 2 dark (no X-rays)"),
    "SourceCurrent": AttributeInfo("X-ray source emission current at mid-exposure (0 with no X-rays)", "mA"),
    "SourceVoltage": AttributeInfo("X-ray source high voltage at mid-exposure", "kV"),
    "Force": AttributeInfo("Load on the specimen at mid-exposure", "N"),
    "RespiratoryPhase": AttributeInfo("Breathing cycle phase at mid-exposure (0..1, 0 = inspiration onset)"),
    "Gate": AttributeInfo("1 when mid-exposure fell in the end-expiration gate window, else 0"),
    "ExposureTime": AttributeInfo("Exposure time of the frame", "s"),
    "SimTime": AttributeInfo("Simulator clock at mid-exposure (real seconds since the simulator started)", "s"),
    "StudyDay": AttributeInfo(
        "Study day of the simulated mouse (its ground truth: ground_truth_day<D>_bin<B>.h5 next to the file)", "d"
    ),
}
"""The instrument's per-frame NDAttributes, stored under /entry/instrument/NDAttributes."""


@dataclass(frozen=True)
class FrameTiming:
    """When one frame's exposure and readout happen, in simulator clock seconds."""

    start_s: float
    exposure_s: float
    readout_s: float
    encoder_deg: float = math.nan
    """Angle latched by the PSO pulse that triggered the frame (NaN otherwise)."""

    @property
    def mid_s(self) -> float:
        return self.start_s + 0.5 * self.exposure_s

    @property
    def exposure_end_s(self) -> float:
        return self.start_s + self.exposure_s

    @property
    def ready_s(self) -> float:
        """When the sensor has read the frame out."""
        return self.start_s + self.exposure_s + self.readout_s


@dataclass(frozen=True)
class FrameState:
    """The imaging physics' input for a frame and the attributes recorded with it."""

    exposure: Exposure
    frame_type: FrameType
    attributes: dict[str, float] = field(default_factory=dict)


def observe(world: World, timing: FrameTiming, binning: int) -> FrameState:
    """The instrument's state at mid-exposure of a frame taken with ``timing``."""
    t = timing.mid_s
    axes = world.axes
    angle = float(axes["rot"].position_at(t))
    offset = tuple(float(axes[name].position_at(t)) for name in ("sx", "sy", "sz"))
    source = world.source.output(world.clock.to_process(t))
    beam = source.xrays_on and source.shutter_open
    physiology = world.physiology
    force = float(world.loadframe.force_at(t))
    exposure = Exposure(
        angle_deg=angle,
        sample_offset_mm=offset,
        respiration_mm=float(physiology.displacement_at(t)),
        force_n=force,
        day=world.study_day,
        exposure_s=timing.exposure_s,
        kv=source.kv,
        power_w=source.power_w,
        spot_um=source.spot_um,
        xrays_on=beam,
        binning=binning,
    )
    if not beam:
        frame_type = FrameType.DARK
    elif not world.imager.sample_in_field(offset):
        frame_type = FrameType.FLAT
    else:
        frame_type = FrameType.PROJECTION
    attributes = {
        "RotationAngle": angle,
        "EncoderAngle": timing.encoder_deg,
        "FrameType": float(frame_type),
        "SourceCurrent": source.current_ma if beam else 0.0,
        "SourceVoltage": source.kv,
        "Force": force,
        "RespiratoryPhase": float(physiology.phase_at(t)),
        "Gate": 1.0 if bool(physiology.gated_at(t)) else 0.0,
        "ExposureTime": timing.exposure_s,
        "SimTime": t,
        "StudyDay": world.study_day,
    }
    return FrameState(exposure, frame_type, attributes)


@dataclass(frozen=True)
class FrameWindow:
    """Which part of the binned full frame the camera reads out, flipped how, digitised how."""

    rows: slice
    cols: slice
    reverse_x: bool = False
    reverse_y: bool = False
    drop_bits: int = 0
    """Low bits dropped from the imager's counts: its 16-bit counts read in Mono12 (the
    12-bit high-well mode digitises the same electrons with 16 times fewer levels)."""


def render(imager: Imager, exposure: Exposure, rng: np.random.Generator, window: FrameWindow) -> np.ndarray:
    """Render the binned full frame, cut the ROI, flip and digitise (runs in a render worker)."""
    counts = imager.render(exposure, rng)[window.rows, window.cols]
    if window.reverse_y:
        counts = counts[::-1]
    if window.reverse_x:
        counts = counts[:, ::-1]
    if window.drop_bits:
        return np.right_shift(counts, window.drop_bits)
    return np.ascontiguousarray(counts)
