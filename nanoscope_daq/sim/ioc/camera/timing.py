"""Readout and frame-period arithmetic of the simulated sCMOS sensor."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ....config import SimCameraConfig

PIXEL_ENCODINGS = ("Mono12", "Mono16")
SHUTTER_MODES = ("Rolling", "Global")
ENCODING_BITS = {"Mono12": 12, "Mono16": 16}


@dataclass(frozen=True)
class SensorTiming:
    """Rolling-shutter sCMOS timing: readout scales with the rows read out.

    A frame needs ``exposure + readout`` without overlap; with Overlap=Yes the next
    exposure runs during the readout, so ``max(exposure, readout)`` suffices.
    """

    row_time_mono12_s: float
    row_time_mono16_s: float
    global_shutter_factor: float

    @classmethod
    def from_config(cls, config: SimCameraConfig) -> SensorTiming:
        return cls(
            row_time_mono12_s=config.row_time_mono12_us * 1e-6,
            row_time_mono16_s=config.row_time_mono16_us * 1e-6,
            global_shutter_factor=config.global_shutter_readout_factor,
        )

    def readout_s(self, roi_rows: int, binning: int, encoding: str, shutter: str) -> float:
        """Time to read out an ROI of ``roi_rows`` sensor rows, binned ``binning`` x ``binning``."""
        if encoding not in PIXEL_ENCODINGS:
            raise ValueError(f"pixel encoding {encoding!r} must be one of {PIXEL_ENCODINGS}")
        if shutter not in SHUTTER_MODES:
            raise ValueError(f"shutter mode {shutter!r} must be one of {SHUTTER_MODES}")
        rows = math.ceil(roi_rows / binning)
        row_time = self.row_time_mono12_s if encoding == "Mono12" else self.row_time_mono16_s
        factor = self.global_shutter_factor if shutter == "Global" else 1.0
        return rows * row_time * factor

    @staticmethod
    def min_period_s(exposure_s: float, readout_s: float, overlap: bool) -> float:
        """Shortest frame period the sensor can run at."""
        return max(exposure_s, readout_s) if overlap else exposure_s + readout_s
