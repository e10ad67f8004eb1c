"""The camera's trigger and acquire logic for scans (the controller role of ophyd-async's adcore).

:class:`CameraControl` knows how to set the sCMOS up for a scan (binning, 12-bit fast
readout, overlapped exposure), how to arm it for one acquisition (Internal trigger for
darks, flats and step frames; External for PSO-triggered fly frames) and how to take
the armed frames. Every verb returns a Status at once; bluesky plans drive it with
``bps.prepare`` and ``bps.trigger``. Where the frames go is the writer's business
(:class:`~nanoscope_daq.devices.capture.FrameCapture`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ophyd.status import StatusBase, SubscriptionStatus

from .detector import XrmDetector
from .signals import done_status, in_order, put_completed

FRAME_MARGIN_S = 1.0
"""Per-frame allowance beyond the exposure for readout and transfer when timing out an acquisition."""


@dataclass(frozen=True)
class ReadoutSettings:
    """How the sensor reads out for a whole scan."""

    binning: int
    exposure_s: float


@dataclass(frozen=True)
class FrameTrigger:
    """One acquisition: ``frames`` frames of ``exposure_s``; ``external`` for PSO triggers, else free-running."""

    frames: int
    exposure_s: float
    external: bool = False


class CameraControl:
    """Trigger and acquire logic of the instrument's camera.

    Parameters
    ----------
    det
        The camera (its ``cam`` is the ADAndor3 driver).
    delivery_timeout_s
        Longest a frame may take from exposure to the plugins (the simulator renders
        after exposing); bounds :meth:`trigger`.
    """

    def __init__(self, det: XrmDetector, *, delivery_timeout_s: float) -> None:
        self.det = det
        self.name = f"{det.name}_control"
        self.parent = None
        self.delivery_timeout_s = delivery_timeout_s
        self.armed: FrameTrigger | None = None

    def prepare(self, value: ReadoutSettings | FrameTrigger) -> StatusBase:
        """Apply scan-wide readout settings, or arm one acquisition; the Status finishes when the IOC took them."""
        cam = self.det.cam
        if isinstance(value, ReadoutSettings):
            pairs = [
                (cam.a3_binning, f"{value.binning}x{value.binning}"), (cam.pixel_encoding, "Mono12"),
                (cam.overlap, "Yes"), (cam.acquire_time, value.exposure_s), (cam.array_callbacks, "Enable"),
                (cam.acquire_period, 0.0),  # the IOC clamps it to the shortest period
            ]
        elif isinstance(value, FrameTrigger):
            if value == self.armed:
                return done_status(self)  # every arming goes through this object: the camera is set so
            self.armed = value
            pairs = [
                (cam.trigger_mode, "External" if value.external else "Internal"), (cam.image_mode, "Multiple"),
                (cam.num_images, value.frames), (cam.acquire_time, value.exposure_s),
            ]
            if not value.external:
                pairs.append((cam.acquire_period, 0.0))  # as fast as the sensor reads out
        else:
            raise TypeError(f"{self.name}: prepare takes ReadoutSettings or FrameTrigger, not {value!r}")
        return in_order(self, [lambda s=signal, v=v: put_completed(s, v) for signal, v in pairs])

    def shortest_period_s(self) -> float:
        """The frame period the IOC allows at the present settings (s)."""
        return float(self.det.cam.acquire_period.get(use_monitor=False))

    def trigger(self) -> StatusBase:
        """Take the armed frames (Internal trigger); finished when the camera is back to Done.

        The camera returns to Done once its last frame has reached the plugins.
        """
        if self.armed is None or self.armed.external:
            raise RuntimeError(f"{self.name}: trigger() needs prepare(FrameTrigger(...)) with an Internal trigger")
        armed = self.armed
        acquire = self.det.cam.acquire
        seen_busy = [False]

        def finished(value, **_) -> bool:
            if value == 1:
                seen_busy[0] = True
            return seen_busy[0] and value == 0

        timeout = armed.frames * (armed.exposure_s + FRAME_MARGIN_S) + self.delivery_timeout_s
        status = SubscriptionStatus(acquire, finished, timeout=timeout, run=False)
        acquire.put(1, wait=False)
        return status

    def stop(self, *, success: bool = False) -> None:
        """Stop an acquisition under way (no effect when the camera is idle)."""
        self.det.cam.acquire.put(0, wait=False)
