"""The sCMOS camera IOC through real Channel Access: stock ophyd classes, files, timing, failures."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import epics
import h5py
import numpy as np
import pytest
from conftest import ca_read, wait_until
from ophyd import Component as Cpt
from ophyd import Device, DynamicDeviceComponent
from ophyd.areadetector import DetectorBase, SingleTrigger
from ophyd.areadetector.base import EpicsSignalWithRBV
from ophyd.areadetector.cam import Andor3DetectorCam
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.paths import EpicsPathSignal
from ophyd.areadetector.plugins import HDF5Plugin_V34, ImagePlugin
from ophyd.signal import EpicsSignalBase

from nanoscope_daq.config import load_config
from nanoscope_daq.devices.detector import XrmDetector, path_template

# areaDetector signals connect lazily, at first use: on a loaded machine 1 s is too short.
EpicsSignalBase.set_defaults(timeout=10.0, connection_timeout=10.0)

CONFIG = load_config()
ROW_TIME_MONO12 = CONFIG.sim.camera.row_time_mono12_us * 1e-6
ROW_TIME_MONO16 = CONFIG.sim.camera.row_time_mono16_us * 1e-6
SENSOR_ROWS = CONFIG.detector.pixels_y


def component_pvs(cls: type[Device], prefix: str) -> set[str]:
    """Every PV the components of an ophyd Device class read or write (from the class, no connection)."""
    names: set[str] = set()
    for attr in cls.component_names:
        cpt = getattr(cls, attr)
        if isinstance(cpt, DynamicDeviceComponent):
            for sub_cls, suffix, kwargs in cpt.defn.values():
                names |= signal_pvs(sub_cls, prefix + suffix, kwargs)
        elif issubclass(cpt.cls, Device):
            names |= component_pvs(cpt.cls, prefix + cpt.suffix)
        elif cpt.suffix is not None:
            names |= signal_pvs(cpt.cls, prefix + cpt.suffix, cpt.kwargs)
    return names


def signal_pvs(cls: type, pvname: str, kwargs: dict) -> set[str]:
    if issubclass(cls, (EpicsSignalWithRBV, EpicsPathSignal)):
        return {pvname, pvname + "_RBV"}
    if issubclass(cls, EpicsSignalBase):
        return {pvname} | ({kwargs["write_pv"]} if kwargs.get("write_pv") else set())
    return set()


def put(signal, value) -> None:
    signal.put(value, wait=True, timeout=10)


def stream(det: XrmDetector, frames: int, directory: Path, *, name: str, binning: str = "8x8",
           exposure: float = 0.002, period: float = 0.0, trigger: str = "Internal", timeout: float = 60.0) -> Path:
    """Capture ``frames`` frames in Stream mode into one file; returns its path once closed."""
    cam, hdf = det.cam, det.hdf1
    for signal, value in (
        (cam.a3_binning, binning), (cam.pixel_encoding, "Mono12"), (cam.acquire_time, exposure),
        (cam.acquire_period, period), (cam.image_mode, "Multiple"), (cam.num_images, frames),
        (cam.trigger_mode, trigger), (hdf.enable, 1), (hdf.file_write_mode, "Stream"), (hdf.num_capture, frames),
        (hdf.create_directory, -1), (hdf.file_path, str(directory)), (hdf.file_name, name),
        (hdf.file_template, "%s%s_%3.3d.h5"), (hdf.auto_increment, "Yes"),
    ):
        put(signal, value)
    put(hdf.capture, 1)
    assert hdf.capture.get(use_monitor=False) == 1, hdf.write_message.get()
    path = Path(read_text(hdf.full_file_name.pvname))
    put(cam.acquire, 1)
    wait_until(lambda: cam.acquire.get(use_monitor=False) == 0 and hdf.capture.get(use_monitor=False) == 0,
               timeout, f"{frames} frames captured in {path}")
    return path


def read_text(pvname: str) -> str:
    """A char-waveform PV read with a fresh caproto request.

    pyepics twice returned a cut value (one element: a file name read as "/", a preview
    of one pixel) in about one suite run in five; the IOC held the full value. Tests that
    check what the IOC serves read it this way.
    """
    return bytes(ca_read(pvname, timeout=10).data).split(b"\0", 1)[0].decode()


def attributes(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        group = h5["entry/instrument/NDAttributes"]
        return {name: group[name][:] for name in group}


@pytest.fixture(scope="module")
def det(xrm):
    """The instrument's camera, writing under the data directory the simulator was started with."""
    camera: XrmDetector = xrm.det
    camera.hdf1.write_path_template = path_template(camera.hdf1.file_path.get())
    return camera


@pytest.fixture(scope="module")
def data_dir(det) -> Path:
    return Path(det.hdf1.file_path.get())


def test_every_pv_of_the_stock_ophyd_classes_is_served(sim):
    names: set[str] = set()
    for cls, suffix in ((Andor3DetectorCam, "cam1:"), (HDF5Plugin_V34, "HDF1:"), (ImagePlugin, "image1:")):
        names |= component_pvs(cls, f"{sim.prefix}CAM:{suffix}")
    assert f"{sim.prefix}CAM:cam1:DataType_RBV.DISA" in names and f"{sim.prefix}CAM:HDF1:FilePath_RBV" in names
    channels = {name: epics.ca.create_channel(name, connect=False, auto_cb=False) for name in sorted(names)}
    missing = [name for name, chid in channels.items() if not epics.ca.connect_channel(chid, timeout=5)]
    assert len(names) > 400
    assert missing == []


def test_period_is_clamped_to_exposure_plus_readout_and_the_readback_says_so(det):
    cam = det.cam
    for signal, value in ((cam.a3_binning, "1x1"), (cam.size.size_y, SENSOR_ROWS), (cam.pixel_encoding, "Mono12"),
                          (cam.overlap, "No"), (cam.acquire_time, 0.010)):
        put(signal, value)
    put(cam.acquire_period, 0.001)
    readout12 = SENSOR_ROWS * ROW_TIME_MONO12
    assert cam.readout_time.get(use_monitor=False) == pytest.approx(readout12)
    assert readout12 == pytest.approx(0.021, abs=5e-4)
    assert cam.acquire_period.get(use_monitor=False) == pytest.approx(0.010 + readout12)
    assert cam.acquire_period.setpoint == pytest.approx(0.001)
    put(cam.pixel_encoding, "Mono16")
    assert cam.acquire_period.get(use_monitor=False) == pytest.approx(0.010 + SENSOR_ROWS * ROW_TIME_MONO16)
    assert SENSOR_ROWS * ROW_TIME_MONO16 == pytest.approx(0.042, abs=5e-4)
    put(cam.overlap, "Yes")  # the next exposure runs during the readout
    assert cam.acquire_period.get(use_monitor=False) == pytest.approx(SENSOR_ROWS * ROW_TIME_MONO16)
    put(cam.a3_binning, "4x4")  # a quarter of the rows to read
    assert cam.readout_time.get(use_monitor=False) == pytest.approx(SENSOR_ROWS / 4 * ROW_TIME_MONO16)
    put(cam.acquire_period, 0.5)  # long enough: not clamped
    assert cam.acquire_period.get(use_monitor=False) == pytest.approx(0.5)
    put(cam.overlap, "No")
    put(cam.pixel_encoding, "Mono12")


def test_refused_settings_keep_their_value_and_say_why(det):
    put(det.cam.num_images, 3)
    put(det.cam.num_images, 0)
    assert det.cam.num_images.get(use_monitor=False) == 3
    assert "NumImages=0 refused" in det.cam.status_message.get(use_monitor=False)
    put(det.hdf1.file_template, "%s%d%q")
    assert det.hdf1.file_template.get(use_monitor=False) != "%s%d%q"
    assert "FileTemplate" in det.hdf1.write_message.get(use_monitor=False)
    assert det.hdf1.write_status.get(as_string=True, use_monitor=False) == "Error"


def stock_detector(prefix: str, data_dir: Path) -> Device:
    """The brief's composition of unmodified ophyd classes, nothing of this project's."""

    class StockHDF5(HDF5Plugin_V34, FileStoreHDF5IterativeWrite):
        pass

    class StockDetector(SingleTrigger, DetectorBase):
        cam = Cpt(Andor3DetectorCam, "cam1:")
        hdf1 = Cpt(StockHDF5, "HDF1:", write_path_template=str(data_dir / "%Y" / "%m" / "%d"))
        image1 = Cpt(ImagePlugin, "image1:")

    detector = StockDetector(prefix, name="stock")
    detector.hdf1.kind = "normal"  # the usual ophyd configuration: events carry the datum ids
    detector.wait_for_connection(timeout=20)
    return detector


@pytest.mark.parametrize("kind", ["stock", "instrument"])
def test_bp_count_gives_resource_datum_and_frames_readable_at_the_datum(det, data_dir, sim, kind):
    from bluesky import RunEngine
    from bluesky.plans import count

    device = stock_detector(f"{sim.prefix}CAM:", data_dir) if kind == "stock" else det
    put(device.cam.a3_binning, "8x8")
    put(device.cam.acquire_time, 0.05)
    put(device.cam.num_images, 2)  # frames per trigger: the Resource's frame_per_point
    documents: list[tuple[str, dict]] = []
    RunEngine()(count([device], num=3), lambda name, doc: documents.append((name, doc)))
    resources = [doc for name, doc in documents if name == "resource"]
    datums = [doc for name, doc in documents if name == "datum"]
    events = [doc for name, doc in documents if name == "event"]
    assert len(resources) == 1 and resources[0]["spec"] == "AD_HDF5"
    assert [e["data"][f"{device.name}_image"] for e in events] == [d["datum_id"] for d in datums]
    path = Path(resources[0]["root"]) / resources[0]["resource_path"]
    assert path.is_relative_to(data_dir)
    per_point = resources[0]["resource_kwargs"]["frame_per_point"]
    assert per_point == 2
    rows, cols = SENSOR_ROWS // 8, CONFIG.detector.pixels_x // 8
    with h5py.File(path, "r") as h5:
        data = h5["entry/data/data"]
        assert data.shape == (3 * per_point, rows, cols)
        for datum in datums:
            point = datum["datum_kwargs"]["point_number"]
            frame = data[point * per_point : (point + 1) * per_point]
            assert frame.shape == (per_point, rows, cols) and frame.dtype == np.uint16
        ids = h5["entry/instrument/NDAttributes/NDArrayUniqueId"][:]
    assert list(np.diff(ids)) == [1] * 5


def test_a_stream_of_n_frames_is_exactly_n_frames(det, data_dir):
    before = det.cam.array_counter.get(use_monitor=False)
    path = stream(det, 40, data_dir / "stream", name="forty", period=0.01)
    with h5py.File(path, "r") as h5:
        in_file = h5["entry/data/data"].shape[0]
    produced = det.cam.array_counter.get(use_monitor=False) - before
    assert produced == det.hdf1.num_captured.get(use_monitor=False) == in_file == 40
    assert det.hdf1.dropped_arrays.get(use_monitor=False) == 0
    starts = attributes(path)["NDArrayTimeStamp"]
    assert np.diff(starts) == pytest.approx(0.01, abs=1e-6)  # sensor timing, not event-loop timing


def test_frames_record_study_day_and_its_ground_truth_is_written_once(sim_factory, tmp_path):
    """A 256 x 256 detector keeps the ground-truth volume small (32^3 voxels at 8x8)."""
    config = tmp_path / "small-detector.toml"
    config.write_text("[detector]\npixels_x = 256\npixels_y = 256\n")
    small = sim_factory.start(config=config)
    try:
        det = XrmDetector(small.prefix + "CAM:", name="small")
        det.wait_for_connection(timeout=20)
        data_dir = Path(det.hdf1.file_path.get())
        assert epics.caput(f"{small.prefix}SIM:DAY", 3.0, wait=True, timeout=5)
        path = stream(det, 2, data_dir / "days", name="day3")
        assert list(attributes(path)["StudyDay"]) == [3.0, 3.0]
        truth = path.parent / "ground_truth_day3_bin8.h5"
        wait_until(truth.exists, 120, f"{truth} to be written")
        with h5py.File(truth, "r") as h5:
            assert h5["labels"].shape == (32, 32, 32)
        index = path.parent / "ground_truth.h5"  # DESIGN.md's name, linking every day imaged here
        wait_until(index.exists, 10, f"{index} to be written")
        with h5py.File(index, "r") as h5:
            assert list(h5) == ["day3_bin8"] and h5["day3_bin8/labels"].shape == (32, 32, 32)
        written = truth.stat().st_mtime_ns
        stream(det, 2, data_dir / "days", name="day3-again")
        assert truth.stat().st_mtime_ns == written
        assert list(truth.parent.glob("*.partial")) == []
    finally:
        sim_factory.stop(small)


def test_preview_is_binned_and_at_most_five_per_second(det, data_dir):
    image = det.image1
    before = image.array_counter.get(use_monitor=False)
    started = time.monotonic()
    stream(det, 60, data_dir / "preview", name="preview", binning="2x2", period=0.02)
    last = det.cam.array_counter.get(use_monitor=False)
    wait_until(lambda: image.unique_id.get(use_monitor=False) == last, 5, "the preview of the last frame")
    elapsed = time.monotonic() - started
    previews = image.array_counter.get(use_monitor=False) - before
    assert 1 <= previews <= CONFIG.sim.camera.preview_rate_hz * elapsed + 1
    rows, cols = image.array_size.height.get(), image.array_size.width.get()
    assert (rows, cols) == (SENSOR_ROWS // 2 // 2, CONFIG.detector.pixels_x // 2 // 2)  # 1024 px binned to 512
    assert max(rows, cols) <= CONFIG.sim.camera.preview_max_size
    # A fresh caproto read, not pyepics (see read_text).
    pixels = ca_read(image.array_data.pvname, data_count=rows * cols, timeout=10).data
    assert len(pixels) == rows * cols and pixels.min() > 0  # a dark frame: offset plus noise


def test_software_trigger_takes_one_frame_per_trigger(det, data_dir):
    cam, hdf = det.cam, det.hdf1
    for signal, value in ((cam.a3_binning, "8x8"), (cam.trigger_mode, "Software"), (cam.image_mode, "Multiple"),
                          (cam.num_images, 3), (hdf.file_write_mode, "Stream"), (hdf.num_capture, 3),
                          (hdf.file_path, str(data_dir)), (hdf.file_name, "soft")):
        put(signal, value)
    put(hdf.capture, 1)
    put(cam.acquire, 1)
    for n in range(1, 4):
        time.sleep(0.2)
        put(cam.software_trigger, 1)
        wait_until(lambda n=n: hdf.num_captured.get(use_monitor=False) == n, 10, f"frame {n}")
    wait_until(lambda: cam.acquire.get(use_monitor=False) == 0, 10, "acquisition to end")
    put(cam.trigger_mode, "Internal")


def test_darks_are_dark_flats_are_bright_projections_vary_with_angle(xrm, det, data_dir):
    source = xrm.source
    source.warm_up().wait(60)
    source.set_output(50.0, 100.0).wait(60)
    source.shutter.set("open").wait(10)
    frames = {}
    try:
        for label, angle, sx in (("proj0", 0.0, 0.0), ("proj90", 90.0, 0.0), ("flat", 90.0, 6.0)):
            xrm.rot.move(angle, wait=True, timeout=30)
            put(xrm.sx.velocity, 10.0)
            xrm.sx.move(sx, wait=True, timeout=30)
            path = stream(det, 1, data_dir / "kinds", name=label, exposure=0.05, timeout=120)
            with h5py.File(path, "r") as h5:
                frames[label] = (h5["entry/data/data"][0].astype(float), attributes(path))
        source.shutter.set("close").wait(10)
        path = stream(det, 1, data_dir / "kinds", name="dark", exposure=0.05, timeout=120)
        with h5py.File(path, "r") as h5:
            frames["dark"] = (h5["entry/data/data"][0].astype(float), attributes(path))
    finally:
        source.shutter.set("close").wait(10)
        xrm.sx.move(0.0, wait=True, timeout=30)
    kinds = {label: int(attrs["FrameType"][0]) for label, (_, attrs) in frames.items()}
    assert kinds == {"proj0": 0, "proj90": 0, "flat": 1, "dark": 2}
    dark, flat = frames["dark"][0].mean(), frames["flat"][0].mean()
    assert flat > 10 * dark
    assert frames["dark"][1]["SourceCurrent"][0] == 0.0
    assert frames["proj0"][1]["SourceCurrent"][0] == pytest.approx(100.0 / 50.0, rel=0.01)
    assert frames["proj0"][1]["RotationAngle"][0] == pytest.approx(0.0, abs=0.01)
    assert frames["proj90"][1]["RotationAngle"][0] == pytest.approx(90.0, abs=0.01)
    proj0, proj90 = frames["proj0"][0], frames["proj90"][0]
    assert proj0.mean() < flat  # the specimen absorbs
    changed = np.abs(proj0 - proj90) > 5 * np.sqrt(flat)
    assert changed.mean() > 0.01, "the projection did not change with the angle"


def test_an_unwritable_path_reports_an_error_and_keeps_earlier_files(det, data_dir, tmp_path):
    earlier = stream(det, 2, data_dir / "safe", name="before")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be")
    hdf = det.hdf1
    put(hdf.create_directory, -2)
    put(hdf.file_path, str(blocker / "frames"))
    put(hdf.file_write_mode, "Stream")
    put(hdf.capture, 1)
    assert hdf.capture.get(use_monitor=False) == 0
    assert hdf.write_status.get(as_string=True, use_monitor=False) == "Error"
    assert "Not a directory" in hdf.write_message.get(use_monitor=False)
    with pytest.raises(OSError, match="cannot write to .*not-a-directory"):
        det.hdf1.write_path_template = path_template(blocker)
        try:
            det.stage()
        finally:
            det.unstage()
            det.hdf1.write_path_template = path_template(data_dir)
    with h5py.File(earlier, "r") as h5:
        assert h5["entry/data/data"].shape[0] == 2
    after = stream(det, 2, data_dir / "safe", name="after")
    assert hdf.write_status.get(as_string=True, use_monitor=False) == "Ok"
    assert after.exists()


def test_a_full_disk_reports_the_error_counts_every_lost_frame_and_keeps_earlier_files(fresh_sim, fresh_xrm):
    """The IOC's file size is limited (RLIMIT_FSIZE; Python ignores SIGXFSZ): writes fail as on a full disk."""
    det: XrmDetector = fresh_xrm.det
    data_dir = Path(det.hdf1.file_path.get())
    earlier = stream(det, 4, data_dir / "disk", name="before", binning="4x4")
    frame_bytes = (SENSOR_ROWS // 4) * (CONFIG.detector.pixels_x // 4) * 2
    soft, hard = resource.prlimit(fresh_sim.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(fresh_sim.pid, resource.RLIMIT_FSIZE, (5 * frame_bytes, hard))
    try:
        before = det.cam.array_counter.get(use_monitor=False)
        full = stream(det, 12, data_dir / "disk", name="full", binning="4x4")
    finally:
        resource.prlimit(fresh_sim.pid, resource.RLIMIT_FSIZE, (soft, hard))
    hdf = det.hdf1
    assert hdf.write_status.get(as_string=True, use_monitor=False) == "Error"
    # The message is polled, and read by a second client too: CI once read one character of it ('c') through
    # the detector's signal, while its status already read "Error"; the cause was not reproduced.
    message = hdf.write_message.pvname
    wait_until(lambda: "File too large" in epics.caget(message, as_string=True, use_monitor=False), 5,
               f"the reason in {message}")
    wait_until(lambda: full.name in hdf.write_message.get(use_monitor=False), 5, f"the file's name in {message}")
    captured = hdf.num_captured.get(use_monitor=False)
    dropped = hdf.dropped_arrays.get(use_monitor=False)
    assert det.cam.array_counter.get(use_monitor=False) - before == 12
    assert 0 < captured < 12 and captured + dropped == 12
    assert fresh_sim.proc.poll() is None, "the IOC died"
    with h5py.File(earlier, "r") as h5:
        assert h5["entry/data/data"].shape[0] == 4
    after = stream(det, 3, data_dir / "disk", name="after", binning="4x4")
    with h5py.File(after, "r") as h5:
        assert h5["entry/data/data"].shape[0] == 3
    assert os.path.exists(earlier)


def test_single_mode_writes_one_numbered_file_per_frame(det, data_dir):
    cam, hdf = det.cam, det.hdf1
    directory = data_dir / "single"
    for signal, value in ((cam.a3_binning, "8x8"), (cam.acquire_time, 0.002), (cam.image_mode, "Multiple"),
                          (cam.num_images, 3), (cam.trigger_mode, "Internal"), (hdf.file_write_mode, "Single"),
                          (hdf.auto_save, "Yes"), (hdf.auto_increment, "Yes"), (hdf.create_directory, -1),
                          (hdf.file_path, str(directory)), (hdf.file_name, "one"), (hdf.file_number, 7),
                          (hdf.file_template, "%s%s_%3.3d.h5")):
        put(signal, value)
    put(cam.acquire, 1)
    wait_until(lambda: cam.acquire.get(use_monitor=False) == 0, 20, "three frames")
    wait_until(lambda: hdf.file_number.get(use_monitor=False) == 10, 10, "three files")
    put(hdf.auto_save, "No")
    names = sorted(p.name for p in directory.glob("one_*.h5"))
    assert names == ["one_007.h5", "one_008.h5", "one_009.h5"]
    for name in names:
        with h5py.File(directory / name, "r") as h5:
            assert h5["entry/data/data"].shape[0] == 1


def test_capture_mode_buffers_then_writes_one_compressed_file(det, data_dir):
    cam, hdf = det.cam, det.hdf1
    for signal, value in ((cam.a3_binning, "8x8"), (cam.acquire_time, 0.002), (cam.image_mode, "Multiple"),
                          (cam.num_images, 5), (cam.trigger_mode, "Internal"), (hdf.file_write_mode, "Capture"),
                          (hdf.num_capture, 5), (hdf.compression, "Blosc"), (hdf.create_directory, -1),
                          (hdf.file_path, str(data_dir / "capture")), (hdf.file_name, "buffered")):
        put(signal, value)
    put(hdf.capture, 1)
    put(cam.acquire, 1)
    wait_until(lambda: hdf.capture.get(use_monitor=False) == 0, 20, "the buffered frames written")
    put(hdf.compression, "None")
    path = Path(read_text(hdf.full_file_name.pvname))
    with h5py.File(path, "r") as h5:
        data = h5["entry/data/data"]
        assert data.shape[0] == 5 == hdf.num_captured.get(use_monitor=False)
        assert "32001" in data._filters  # Blosc's HDF5 filter id


def test_swmr_file_can_be_read_while_frames_stream_in(det, data_dir):
    cam, hdf = det.cam, det.hdf1
    for signal, value in ((cam.a3_binning, "8x8"), (cam.acquire_time, 0.002), (cam.acquire_period, 0.05),
                          (cam.image_mode, "Continuous"), (cam.trigger_mode, "Internal"),
                          (hdf.file_write_mode, "Stream"), (hdf.num_capture, 0), (hdf.swmr_mode, "On"),
                          (hdf.num_frames_flush, 2), (hdf.create_directory, -1),
                          (hdf.file_path, str(data_dir / "swmr")), (hdf.file_name, "live")):
        put(signal, value)
    put(hdf.capture, 1)
    put(cam.acquire, 1)
    try:
        assert hdf.swmr_active.get(as_string=True, use_monitor=False) == "Active"
        wait_until(lambda: hdf.num_captured.get(use_monitor=False) >= 6, 20, "six frames")
        with h5py.File(read_text(hdf.full_file_name.pvname), "r", libver="latest", swmr=True) as reader:
            frames = reader["entry/data/data"]
            frames.refresh()
            assert frames.shape[0] >= 4
    finally:
        put(cam.acquire, 0)
        put(hdf.capture, 0)
        put(hdf.swmr_mode, "Off")
        put(cam.acquire_period, 0.0)
    assert hdf.swmr_active.get(as_string=True, use_monitor=False) == "Off"
    with h5py.File(read_text(hdf.full_file_name.pvname), "r") as h5:
        assert h5["entry/data/data"].shape[0] == hdf.num_captured.get(use_monitor=False)


def test_create_directory_levels_follow_ndpluginfile(tmp_path):
    from nanoscope_daq.sim.ioc.camera.hdf5_plugin import CreationNotAllowed, create_directories

    with pytest.raises(CreationNotAllowed, match="CreateDirectory=0"):
        create_directories(tmp_path / "a", 0)
    with pytest.raises(CreationNotAllowed, match="does not exist"):
        create_directories(tmp_path / "b" / "c" / "d" / "e", -3)  # four levels missing
    create_directories(tmp_path / "b" / "c" / "d", -3)
    assert (tmp_path / "b" / "c" / "d").is_dir()
    depth = len(tmp_path.parts) - 1  # levels that must exist: tmp_path and above
    create_directories(tmp_path / "x" / "y", depth)
    assert (tmp_path / "x" / "y").is_dir()
    with pytest.raises(CreationNotAllowed):
        create_directories(tmp_path / "p" / "q", depth + 1)


def test_the_capture_names_the_file_the_ioc_writes_even_when_its_name_grows(det, data_dir):
    """pyepics reads a char waveform with the length of its last monitor update unless told otherwise."""
    from nanoscope_daq.devices.capture import FrameCapture

    capture = FrameCapture(det, data_dir)
    for stem in ("s", "a_much_longer_file_name_than_before"):
        det.hdf1.full_file_name.get()  # pyepics now holds the last name's length
        capture.prepare(stem).wait(10)
        capture.kickoff().wait(10)
        try:
            assert capture.path is not None and capture.path.name.startswith(stem)
            assert capture.path.is_file() and capture.path.parent.is_dir()
        finally:
            det.hdf1.capture.put(0, wait=True)
