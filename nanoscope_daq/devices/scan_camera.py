"""The camera as one scan drives it: trigger/acquire logic and the file writer combined in one detector.

Like ophyd-async's ``StandardDetector`` (``epics/adcore``), :class:`ScanCamera` joins a
controller (:class:`CameraControl`: readout settings, arming, acquisition) and a writer
(:class:`FrameCapture`: the run's HDF5 file and its stream assets). Plans speak to it with
bluesky messages only: ``prepare`` (readout settings, an acquisition, or the file),
``kickoff`` (the file opened, capturing), ``trigger`` (take the armed frames),
``collect`` (announce frames in the file) and ``complete`` (every frame in the file,
the file closed). An aborted run's ``unstage``
stops the camera and closes the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ophyd.status import StatusBase

from .camera_control import CameraControl, FrameTrigger, ReadoutSettings
from .capture import FrameCapture


@dataclass(frozen=True)
class CameraFile:
    """The run's camera file, named ``<stem>.h5`` under the day's directory."""

    stem: str


class ScanCamera:
    """Controller and writer of the camera, as one bluesky detector for a scan."""

    def __init__(self, control: CameraControl, capture: FrameCapture) -> None:
        self.control = control
        self.capture = capture
        self.name = f"{control.det.name}_scan"
        self.parent = None

    def prepare(self, value: ReadoutSettings | FrameTrigger | CameraFile) -> StatusBase:
        """Readout settings or an acquisition go to the controller; the file to the writer."""
        if isinstance(value, CameraFile):
            return self.capture.prepare(value.stem)
        return self.control.prepare(value)

    def kickoff(self) -> StatusBase:
        """Open the prepared file and start capturing into it."""
        return self.capture.kickoff()

    def trigger(self) -> StatusBase:
        """Take the armed frames; once they are exposed and delivered, the writer counts them."""
        armed = self.control.armed
        status = self.control.trigger()
        assert armed is not None  # control.trigger() refuses otherwise
        status.add_callback(lambda st: self.capture.acquired(armed.frames) if st.success else None)
        return status

    def complete(self) -> StatusBase:
        """Every frame acquired is in the file, and the file is closed."""
        return self.capture.complete()

    def stage(self) -> list:
        return [self]

    def unstage(self) -> list:
        """Stop the camera and close the file if the run ends early (the frames in it are kept)."""
        self.control.stop()
        self.capture.unstage()
        return [self]

    def describe_collect(self) -> dict[str, dict]:
        return self.capture.describe_collect()

    def collect_asset_docs(self, index: int | None = None) -> Iterator[tuple[str, dict]]:
        return self.capture.collect_asset_docs(index)
