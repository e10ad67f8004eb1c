"""What the camera IOC asks the imaging physics for, one frame at a time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exposure:
    """The instrument's state at mid-exposure of one frame.

    The camera IOC fills this from the shared world (stages, source, load cell,
    physiology) and hands it to ``Imager.render``; the imager needs nothing else.
    """

    angle_deg: float
    """Rotation-stage angle at mid-exposure (degrees, measured, not commanded)."""
    sample_offset_mm: tuple[float, float, float]
    """Sample stage positions (sx, sy, sz) in mm; a flat moves the sample out of the beam."""
    respiration_mm: float
    """Displacement of the specimen by the mouse's breathing at mid-exposure (mm)."""
    force_n: float
    """Load on the specimen (N); deforms the bone."""
    day: float
    """Study day of the simulated mouse: remodelling applied up to this day."""
    exposure_s: float
    kv: float
    power_w: float
    spot_um: float
    """Focal spot size the source is set to (um); a power above its limit for that spot enlarges it."""
    xrays_on: bool
    """Source emitting and shutter open; False gives a dark frame."""
    binning: int = 1
