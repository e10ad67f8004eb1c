"""The sCMOS camera as an ophyd area detector built from stock ophyd classes.

``cam`` is ophyd's ``Andor3DetectorCam``, ``hdf1`` its ``HDF5Plugin_V34`` with the
``FileStoreHDF5IterativeWrite`` mixin (each file becomes a bluesky Resource, each
trigger a Datum), ``image1`` its ``ImagePlugin`` (binned live preview). Frames are
written by the IOC under ``<data_dir>/YYYY/MM/DD/`` (``data_dir`` given to the detector).
"""

from __future__ import annotations

import os
import time

from ophyd import Component as Cpt
from ophyd import EpicsSignalRO
from ophyd.areadetector import DetectorBase, SingleTrigger
from ophyd.areadetector.cam import Andor3DetectorCam
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.plugins import HDF5Plugin_V34, ImagePlugin
from ophyd.device import Staged
from ophyd.status import StatusBase

from .signals import WholeStringSignalRO

DATE_SUBDIRECTORIES = "%Y/%m/%d/"
"""strftime template of the directories under the data directory (one per day)."""
CREATE_DIRECTORY_DEPTH = -3
"""The IOC may create the last three levels (the date directories), as ophyd stages it."""


def path_template(data_dir: str | os.PathLike) -> str:
    """Where files go: the data directory, then one directory per day."""
    return os.path.join(os.path.expanduser(os.fspath(data_dir)), DATE_SUBDIRECTORIES)


class XrmHDF5Plugin(HDF5Plugin_V34, FileStoreHDF5IterativeWrite):
    """HDF5 file plugin registering its files with bluesky (Resource/Datum documents).

    Set ``write_path_template`` (or ``XrmDetector(data_dir=...)``) before staging: the
    device reads no configuration of its own. Staging first asks the IOC to create and
    check the day's directory, and fails with the IOC's reason when it cannot write
    there (instead of waiting forever for a capture that cannot start).
    """

    full_file_name = Cpt(WholeStringSignalRO, "FullFileName_RBV", string=True, kind="config")
    """The file being written, read whole (signals.WholeStringSignalRO)."""

    def __init__(self, *args, write_path_template: str = "", **kwargs) -> None:
        super().__init__(*args, write_path_template=write_path_template, **kwargs)

    def make_filename(self) -> tuple[str, str, str]:
        if not self.write_path_template:
            raise ValueError(f"{self.name}: no directory to write in; set {self.name}.write_path_template "
                             "(or XrmDetector(data_dir=...)) before staging")
        filename, read_path, write_path = super().make_filename()
        self.create_directory.set(CREATE_DIRECTORY_DEPTH).wait()
        self.write_status.put(0, wait=True)
        self.file_path.set(write_path).wait()
        if not self.file_path_exists.get() or self.write_status.get(as_string=True) != "Ok":
            raise OSError(f"{self.name}: the IOC cannot write to {write_path}: {self.write_message.get()}")
        return filename, read_path, write_path


class XrmCam(Andor3DetectorCam):
    """ADAndor3 driver plus the instrument's frame-accounting counters (docs/pv-reference.md)."""

    missed_triggers = Cpt(EpicsSignalRO, "MissedTriggers_RBV", kind="omitted")
    buffer_stalls = Cpt(EpicsSignalRO, "BufferStalls_RBV", kind="omitted")
    frames_lost = Cpt(EpicsSignalRO, "FramesLost_RBV", kind="omitted")


class XrmDetector(SingleTrigger, DetectorBase):
    """The instrument's sCMOS camera: one frame per trigger, written to HDF5 by the IOC.

    ``data_dir`` overrides the configuration's data directory (the IOC's
    ``--data-dir``), e.g. ``XrmDetector("NS:CAM:", name="det", data_dir="/data")``.
    """

    cam = Cpt(XrmCam, "cam1:")
    hdf1 = Cpt(XrmHDF5Plugin, "HDF1:")
    image1 = Cpt(ImagePlugin, "image1:")

    def __init__(self, prefix: str, *, data_dir: str | os.PathLike | None = None, **kwargs) -> None:
        super().__init__(prefix, **kwargs)
        if data_dir is not None:
            self.hdf1.write_path_template = path_template(data_dir)
        self.hdf1.kind = "normal"

    def stage(self) -> list:
        # SingleTrigger's status reads these in trigger(); a lazy first connection there can
        # outlast a short frame.
        for signal in (self.cam.array_counter, self.cam.num_images):
            signal.wait_for_connection()
        return super().stage()

    def trigger(self) -> StatusBase:
        """One acquisition, as ``SingleTrigger.trigger``, but returns the status it made.

        The stock method returns ``self._status``, which its Acquire callback clears when
        the frame ends: a frame that ends before ``trigger`` returns (short exposure, busy
        client) would hand bluesky None.
        """
        if self._staged != Staged.yes:
            raise RuntimeError("This detector is not ready to trigger. Call the stage() method before triggering.")
        status = self._status = self._status_type(self)
        self._acquisition_signal.put(1, wait=False)
        self.generate_datum(self._image_name, time.time(), {})
        return status
