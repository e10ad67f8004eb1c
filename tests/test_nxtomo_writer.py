"""The NXtomo writer: real camera files, real documents, and the readers nabu and tomopy users rely on.

Each test acquires frames into a camera file with the simulator's own HDF5 writer
(areaDetector layout, SWMR, the instrument's NDAttributes) and emits the documents of
docs/documents.md with event-model, to the writer, in the order the RunEngine would.
The files are then read with h5py, the nxtomo library and tomoscan's NXtomoScan.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from document_scan import DocumentScan
from nxtomo import NXtomo
from silx.io.url import DataUrl
from silx.io.utils import get_data
from tomoscan.esrf.scan.nxtomoscan import NXtomoScan
from tomoscan.esrf.scan.utils import dataset_has_broken_vds
from tomoscan.validator import ReconstructionValidator

from nanoscope_daq.pipeline import DocumentContractError, ImageKey, NXtomoWriter, nxtomo_path
from nanoscope_daq.pipeline.frame_ranges import FrameRange

ROWS, COLS = 6, 10
CURRENT_MA = 0.18
GEOMETRY = {
    "type": "cone",
    "source_sample_mm": 20.0,
    "source_detector_mm": 200.0,
    "magnification": 10.0,
    "detector_pixel_um": 13.0,
    "voxel_size_um": 1.3,
    "rows": ROWS,
    "cols": COLS,
}
SCAN = {
    "kind": "fly",
    "start_deg": 0.0,
    "range_deg": 180.0,
    "projections": 15,
    "exposure_s": 0.05,
    "period_s": 0.06,
    "binning": 2,
    "darks": 3,
    "flats": 4,
    "flats_axis": "sx",
    "flats_offset_mm": 5.0,
    "gating": "none",
}
START = {
    "plan_name": "time_series",
    "plan_args": {"time_points": 2, "interval_s": 0.0},
    "scan_id": 7,
    "subject": {"subject_id": "M07", "cohort": "OVX", "treatment": "PTH", "day": 14, "anaesthesia": "isoflurane 2%"},
    "scan": SCAN,
    "geometry": GEOMETRY,
    "source": {"anode": "W", "kv": 60.0, "power_w": 10.0, "spot_um": 5.0, "energy_kev": 59.3},
    "detector": {"model": "Andor Zyla 5.5", "exposure_s": 0.05, "period_s": 0.06, "binning": 2,
                 "pixel_encoding": "Mono16"},
    "dose": {"per_tomogram_gy": 0.1, "estimate_gy": 0.2, "budget_gy": 2.0, "delivered_before_gy": 0.3,
             "remaining_gy": 1.7},
}
STEP_DEG = SCAN["range_deg"] / SCAN["projections"]
GRID = np.arange(SCAN["projections"]) * STEP_DEG


def frame_time(index: int) -> float:
    """Exposure start of camera frame ``index`` (POSIX seconds)."""
    return 1.75e9 + 0.06 * index


@dataclass
class Acquired:
    """What the recorder put in the camera file, to compare with what the readers see."""

    pixels: list[np.ndarray]
    angles: list[float]
    times: list[float]
    currents: list[float]


class ScanRecorder(DocumentScan):
    """Acquires random frames at given angles into a real camera file and emits the documents a plan would."""

    def __init__(self, directory: Path, callback, *, start: dict = START, chunk: int = 4,
                 tomogram_prefix: str = "") -> None:
        super().__init__(directory, callback, start, (ROWS, COLS), name="scan_0007", chunk=chunk,
                         tomogram_prefix=tomogram_prefix)
        self.acquired = Acquired([], [], [], [])

    def take(self, stream: str, angles, *, current=None, frame_type=None, encoder=None) -> FrameRange:
        """Acquire one frame per angle in ``stream`` and announce them in chunks; returns their range."""
        count = len(angles)
        default_current = 0.0 if stream == "darks" else CURRENT_MA
        currents = np.broadcast_to(default_current if current is None else current, (count,))
        types = np.broadcast_to({"darks": 2, "flats": 1, "projections": 0}[stream] if frame_type is None
                                else frame_type, (count,))
        encoders = np.broadcast_to(math.nan if encoder is None else encoder, (count,))
        indices = self.frames + np.arange(count)
        pixels = np.stack([np.random.default_rng(i).integers(0, 60000, (ROWS, COLS), dtype=np.uint16) for i in indices])
        attributes = [{"RotationAngle": float(angle), "EncoderAngle": float(encoders[i]), "FrameType": float(types[i]),
                       "SourceCurrent": float(currents[i]), "Force": 1.5, "RespiratoryPhase": (0.1 * index) % 1.0,
                       "Gate": 1.0, "ExposureTime": 0.05} for i, (angle, index) in enumerate(zip(angles, indices))]
        frames = super().take(stream, pixels, [frame_time(i) for i in indices], attributes)
        self.acquired.pixels.extend(pixels)
        self.acquired.angles.extend(float(angle) for angle in angles)
        self.acquired.times.extend(frame_time(i) for i in indices)
        self.acquired.currents.extend(float(c) for c in currents)
        return frames

    def tomogram(self, index: int, *, darks: FrameRange, projections: FrameRange, flats_before: FrameRange | None,
                 flats_after: FrameRange | None, grid_start: float = 0.0, as_page: bool = False, **override) -> None:
        super().tomogram(index, darks=darks, projections=projections, flats_before=flats_before,
                         flats_after=flats_after, grid=(grid_start, STEP_DEG, SCAN["projections"]), as_page=as_page,
                         **override)


def image_keys(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5["entry/instrument/detector/image_key"][()]


def assert_ready_for_nabu(scan: NXtomoScan) -> None:
    """tomoscan's check that nabu finds projections, darks, flats (through the VDS), energy, distance, pixel."""
    report = ReconstructionValidator(scan, check_phase_retrieval=True, check_values=True).checkup(only_issues=True)
    assert "No issue found" in report, report


@pytest.fixture
def writer() -> NXtomoWriter:
    return NXtomoWriter()


def record_time_series(directory: Path, writer: NXtomoWriter):
    """Two tomograms; the first has an interlock trip (two frames without beam) and re-takes three angles."""
    scan = ScanRecorder(directory, writer)
    darks = scan.take("darks", [0.0] * 3)
    flats0 = scan.take("flats", [0.0] * 4)
    first = scan.take("projections", np.concatenate((GRID, GRID[[4, 5, 6]])),
                      current=[CURRENT_MA] * 5 + [0.0, 0.0] + [CURRENT_MA] * 11,
                      frame_type=[0] * 5 + [2, 2] + [0] * 11, encoder=np.concatenate((GRID, GRID[[4, 5, 6]])) - 0.2)
    flats1 = scan.take("flats", [0.0] * 4)
    scan.tomogram(0, darks=darks, flats_before=flats0, projections=first, flats_after=flats1)
    second = scan.take("projections", 180.0 + GRID)
    flats2 = scan.take("flats", [0.0] * 4)
    scan.tomogram(1, darks=darks, flats_before=flats1, projections=second, flats_after=flats2, grid_start=180.0,
                  as_page=True)
    scan.stop()
    return scan, (darks, flats0, first, flats1, second, flats2)


def test_each_tomogram_becomes_an_nxtomo_file_that_nxtomo_and_tomoscan_read(tmp_path, writer):
    scan, (darks, flats0, first, flats1, second, flats2) = record_time_series(tmp_path, writer)
    assert writer.written == [tmp_path / "scan_0007_000.nxs", tmp_path / "scan_0007_001.nxs"]
    assert writer.written == [nxtomo_path(scan.path, 0), nxtomo_path(scan.path, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan_0007.h5", "scan_0007_000.nxs", "scan_0007_001.nxs"]

    # Tomogram 0: darks, flats, 18 projection frames (2 tripped, then 3 angles re-taken), flats after.
    frames = np.concatenate([r.indices() for r in (darks, flats0, first, flats1)])
    expected = np.array([2] * 3 + [1] * 4 + [0] * 4 + [3, 3, 3] + [0] * 8 + [0, 0, 0] + [1] * 4)
    path = writer.written[0]
    np.testing.assert_array_equal(image_keys(path), expected)
    with h5py.File(path, "r") as h5, h5py.File(scan.path, "r") as camera:
        entry = h5["entry"]
        assert entry.attrs["definition"] == "NXtomo" and entry["definition"][()] == b"NXtomo"
        assert bool(entry["experiment_complete"][()]) and bool(entry.attrs["experiment_complete"])
        data = entry["instrument/detector/data"]
        assert data.is_virtual and data.shape == (len(frames), ROWS, COLS)
        assert {m.file_name for m in data.virtual_sources()} == {"scan_0007.h5"}  # relative: the directory can move
        np.testing.assert_array_equal(data[()], camera["entry/data/data"][frames])
        np.testing.assert_array_equal(entry["sample/rotation_angle"][()], np.array(scan.acquired.angles)[frames])
        np.testing.assert_array_equal(entry["control/data"][()], np.array(scan.acquired.currents)[frames])
        np.testing.assert_array_equal(entry["instrument/detector/sequence_number"][()], frames)
        starts = entry["instrument/detector/start_time"]
        np.testing.assert_allclose(starts[()], np.array(scan.acquired.times)[frames] - scan.acquired.times[0])
        assert entry["sample/name"][()] == b"M07"
        assert entry["sample/subject/treatment"][()] == b"PTH"
        assert entry["sample/dose/per_tomogram_gy"][()] == 0.1
        assert entry["sample/dose/per_tomogram_gy"].attrs["units"] == "Gy"
        assert entry["acquisition/plan_name"][()] == b"time_series"
        assert entry["acquisition/scan_id"][()] == 7
        assert entry["acquisition/run_uid"][()].decode() == scan.bundle.start_doc["uid"]
        assert entry["acquisition/run_exit_status"][()] == b"success"
        assert entry["acquisition/grid_angles_covered"][()] == 15
        assert {k: int(v[()]) for k, v in entry["acquisition/invalid_frames"].items()} == {
            "beam_state": 2, "frame_type": 0, "off_grid": 0, "retaken": 1}
        assert entry["frames/respiratory_phase"].shape == (len(frames),)
        assert entry["frames/rotation_angle"] == entry["sample/rotation_angle"]  # one dataset, two names
        assert entry["beam/incident_energy"][()] == 59.3  # the path older NXtomo readers use
        # Data Exchange view: only the valid frames, no pixel copied.
        exchange = h5["exchange"]
        valid_projections = frames[expected == 0]
        np.testing.assert_array_equal(exchange["data"][()], camera["entry/data/data"][valid_projections])
        white = np.concatenate((flats0.indices(), flats1.indices()))
        np.testing.assert_array_equal(exchange["data_white"][()], camera["entry/data/data"][white])
        np.testing.assert_array_equal(exchange["data_dark"][()], camera["entry/data/data"][darks.start:darks.stop])
        np.testing.assert_array_equal(exchange["theta"][()], np.array(scan.acquired.angles)[valid_projections])
        assert all(exchange[name].is_virtual for name in ("data", "data_white", "data_dark"))
        assert sorted(np.round(exchange["theta"][()] / STEP_DEG).astype(int)) == list(range(15))

    nx = NXtomo().load(str(path), "entry")
    np.testing.assert_array_equal([k.value for k in nx.instrument.detector.image_key], expected)
    np.testing.assert_array_equal(nx.sample.rotation_angle.to("deg").magnitude, np.array(scan.acquired.angles)[frames])
    assert nx.instrument.beam.incident_energy.to("keV").magnitude == pytest.approx(59.3)
    assert nx.instrument.detector.x_pixel_size.to("um").magnitude == pytest.approx(13.0)
    assert nx.instrument.detector.distance.to("mm").magnitude == pytest.approx(180.0)
    assert nx.instrument.detector.count_time.to("s").magnitude == pytest.approx([0.05] * len(frames))
    assert nx.instrument.source.distance.to("mm").magnitude == pytest.approx(-20.0)
    assert nx.sample.name == "M07"
    assert nx.control.data.to("mA").magnitude == pytest.approx(np.array(scan.acquired.currents)[frames])
    assert nx.start_time.timestamp() == pytest.approx(scan.acquired.times[first.start])

    assert NXtomoScan(str(path)).entry == "/entry"  # found without naming it
    tomo = NXtomoScan(str(path), "entry")
    assert_ready_for_nabu(tomo)
    assert sorted(tomo.darks) == [0, 1, 2]
    assert sorted(tomo.flats) == [3, 4, 5, 6, 25, 26, 27, 28]
    assert sorted(tomo.projections) == [i for i, key in enumerate(expected) if key == 0]
    assert tomo.energy == pytest.approx(59.3)
    assert tomo.sample_x_pixel_size == pytest.approx(1.3e-6)
    assert tomo.detector_x_pixel_size == pytest.approx(13e-6)
    assert tomo.sample_detector_distance == pytest.approx(0.18)
    assert tomo.source_sample_distance == pytest.approx(-0.02)
    assert (tomo.dim_1, tomo.dim_2) == (COLS, ROWS)
    np.testing.assert_array_equal(tomo.rotation_angle, np.array(scan.acquired.angles)[frames])
    angles = tomo.get_proj_angle_url()
    assert sorted(round(a / STEP_DEG) for a in angles) == list(range(15))
    for index in (0, 3, 10, 20):
        source = frames[index]
        np.testing.assert_array_equal(get_data(tomo.projections.get(index) or tomo.flats.get(index)
                                               or tomo.darks[index]), scan.acquired.pixels[source])

    # Tomogram 1 shares the darks and takes the flats after tomogram 0 as its flats before.
    second_frames = np.concatenate([r.indices() for r in (darks, flats1, second, flats2)])
    np.testing.assert_array_equal(image_keys(writer.written[1]), [2] * 3 + [1] * 4 + [0] * 15 + [1] * 4)
    tomo1 = NXtomoScan(str(writer.written[1]), "entry")
    np.testing.assert_array_equal(tomo1.rotation_angle, np.array(scan.acquired.angles)[second_frames])
    assert len(tomo1.projections) == 15 and len(tomo1.flats) == 8 and len(tomo1.darks) == 3


def test_the_files_still_read_after_the_directory_moves(tmp_path, writer, monkeypatch):
    (tmp_path / "day14").mkdir()
    record_time_series(tmp_path / "day14", writer)
    with h5py.File(tmp_path / "day14" / "scan_0007.h5", "r") as camera:
        pixels = camera["entry/data/data"][()]
    moved = shutil.move(tmp_path / "day14", tmp_path / "archive")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = Path(moved) / "scan_0007_001.nxs"
    with h5py.File(path, "r") as h5:
        frames = h5["entry/instrument/detector/sequence_number"][()]
        np.testing.assert_array_equal(h5["entry/instrument/detector/data"][()], pixels[frames])
        np.testing.assert_array_equal(h5["exchange/data_dark"][()], pixels[:3])
    nx = NXtomo().load(str(path), "entry", detector_data_as="as_numpy_array")
    np.testing.assert_array_equal(nx.instrument.detector.data, pixels[frames])
    url = DataUrl(file_path=str(path), data_path="/entry/instrument/detector/data")
    assert not dataset_has_broken_vds(url, raise_error=True)
    tomo = NXtomoScan(str(path), "entry")
    first_projection = min(tomo.projections)
    np.testing.assert_array_equal(get_data(tomo.projections[first_projection]), pixels[frames[first_projection]])


def test_an_aborted_run_leaves_its_unfinished_tomogram_marked_incomplete(tmp_path, writer):
    scan = ScanRecorder(tmp_path, writer, chunk=3)
    darks = scan.take("darks", [0.0] * 3)
    flats0 = scan.take("flats", [0.0] * 4)
    first = scan.take("projections", GRID)
    flats1 = scan.take("flats", [0.0] * 4)
    scan.tomogram(0, darks=darks, flats_before=flats0, projections=first, flats_after=flats1)
    cut = scan.take("projections", 180.0 + GRID[:8])
    scan.stop("abort", "interlock: door opened")

    assert [p.name for p in writer.written] == ["scan_0007_000.nxs", "scan_0007_001.nxs"]
    done, unfinished = writer.written
    with h5py.File(done, "r") as h5:
        assert bool(h5["entry/experiment_complete"][()])  # its tomogram was finished before the abort
        assert h5["entry/acquisition/run_exit_status"][()] == b"abort"
    with h5py.File(unfinished, "r") as h5:
        entry = h5["entry"]
        assert not entry["experiment_complete"][()] and not entry.attrs["experiment_complete"]
        assert entry["acquisition/run_exit_status"][()] == b"abort"
        assert entry["acquisition/run_exit_reason"][()] == b"interlock: door opened"
        assert entry["title"][()].decode().endswith("(incomplete)")
        assert entry["acquisition/grid_start"][()] == pytest.approx(180.0)
        assert entry["acquisition/grid_angles_covered"][()] == 8
        frames = entry["instrument/detector/sequence_number"][()]
    np.testing.assert_array_equal(frames, np.concatenate([darks.indices(), flats1.indices(), cut.indices()]))
    np.testing.assert_array_equal(image_keys(unfinished), [2] * 3 + [1] * 4 + [0] * 8)
    nx = NXtomo().load(str(unfinished), "entry")
    assert len(nx.instrument.detector.image_key) == 15
    tomo = NXtomoScan(str(unfinished), "entry")
    assert (len(tomo.darks), len(tomo.flats), len(tomo.projections)) == (3, 4, 8)
    assert_ready_for_nabu(tomo)
    assert tomo.energy == pytest.approx(59.3)


def test_an_aborted_run_without_finished_tomograms_places_its_grid_from_the_scan(tmp_path, writer):
    scan = ScanRecorder(tmp_path, writer)
    scan.take("darks", [0.0] * 2)
    scan.take("flats", [0.0] * 2)
    scan.take("projections", [0.0, 12.0, 24.0, 36.0, 24.0])  # 24 deg re-taken: the last counts
    scan.stop("fail", "RunEngine error")
    (path,) = writer.written
    np.testing.assert_array_equal(image_keys(path), [2, 2, 1, 1, 0, 0, 3, 0, 0])
    tomo = NXtomoScan(str(path), "entry")
    assert sorted(tomo.projections) == [4, 5, 7, 8]


def test_a_run_without_tomograms_writes_nothing(tmp_path, writer):
    scan = ScanRecorder(tmp_path, writer)
    scan.take("darks", [0.0] * 2)
    scan.take("flats", [0.0] * 2)
    scan.stop()
    assert writer.written == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan_0007.h5"]


def test_on_file_written_hears_each_file(tmp_path):
    heard: list[Path] = []
    writer = NXtomoWriter(on_file_written=heard.append)
    record_time_series(tmp_path, writer)
    assert heard == writer.written and len(heard) == 2


def test_a_flat_with_the_sample_in_the_field_or_a_projection_off_the_grid_is_invalid(tmp_path, writer):
    scan = ScanRecorder(tmp_path, writer)
    darks = scan.take("darks", [0.0] * 2)
    flats = scan.take("flats", [0.0] * 3, frame_type=[1, 0, 1])  # the stage had not left the field
    projections = scan.take("projections", np.concatenate((GRID, [180.0])))  # one frame past the last angle
    scan.tomogram(0, darks=darks, flats_before=flats, projections=projections, flats_after=None)
    scan.stop()
    np.testing.assert_array_equal(image_keys(writer.written[0]), [2, 2, 1, 3, 1] + [0] * 15 + [3])
    with h5py.File(writer.written[0], "r") as h5:
        invalid = {k: int(v[()]) for k, v in h5["entry/acquisition/invalid_frames"].items()}
    assert invalid == {"beam_state": 0, "frame_type": 1, "off_grid": 1, "retaken": 0}


def test_a_tomogram_of_frames_never_announced_is_refused_with_the_reason(tmp_path, writer):
    scan = ScanRecorder(tmp_path, writer)
    darks = scan.take("darks", [0.0] * 3)
    flats = scan.take("flats", [0.0] * 4)
    projections = scan.take("projections", GRID)
    scan.tomogram(0, darks=darks, flats_before=flats, projections=projections, flats_after=None)
    scan.tomogram(1, darks=darks, flats_before=flats, projections=FrameRange(projections.start, 40),
                  flats_after=None)
    with pytest.raises(DocumentContractError, match=r"tomogram 1 refers to frames \[7, 40\) .* as projections, "
                       r"but the 'projections' stream announced only \[7, 22\)"):
        scan.stop()
    assert [p.name for p in writer.written] == ["scan_0007_000.nxs"]  # the good tomogram is still written


def test_a_broken_document_does_not_stop_the_scan_but_the_stop_names_it(tmp_path, writer):
    scan = ScanRecorder(tmp_path, writer)
    darks = scan.take("darks", [0.0] * 2)
    event = scan.streams["tomograms"].compose_event(data={"tomogram": 0, "file": str(scan.path)},
                                                    timestamps={"tomogram": 0, "file": 0}, validate=False)
    writer("event", event)  # logged, kept for the stop: the scan goes on
    tiff = scan.bundle.compose_stream_resource(mimetype="image/tiff", uri=f"file://localhost{tmp_path}/a.tif",
                                               data_key="image", parameters={})
    writer("stream_resource", tiff.stream_resource_doc)
    projections = scan.take("projections", GRID)
    scan.tomogram(1, darks=darks, flats_before=None, projections=projections, flats_after=None)
    with pytest.raises(DocumentContractError) as refused:
        scan.stop()
    message = str(refused.value)
    assert "event: a tomograms event lacks the keys ['time_point', 'projections_start'" in message
    assert "stream_resource: stream_resource" in message and "has mimetype 'image/tiff'" in message
    assert [p.name for p in writer.written] == ["scan_0007_001.nxs"]


def test_documents_outside_a_run_are_refused(writer):
    with pytest.raises(DocumentContractError, match="outside a run; subscribe it before the run starts"):
        writer("descriptor", {"uid": "x", "name": "projections", "data_keys": {}})


def test_image_key_names_match_nxtomo():
    from nxtomo.nxobject.nxdetector import ImageKey as NXtomoImageKey

    for key in ImageKey:
        assert NXtomoImageKey(key.value).name.startswith(
            {"PROJECTION": "PROJECTION", "FLAT": "FLAT", "DARK": "DARK", "INVALID": "INVALID"}[key.name])


def test_a_camera_file_gone_before_the_stop_is_reported_with_its_path(tmp_path, writer):
    scan = ScanRecorder(tmp_path, writer)
    darks = scan.take("darks", [0.0] * 2)
    projections = scan.take("projections", GRID)
    scan.tomogram(0, darks=darks, flats_before=None, projections=projections, flats_after=None)
    scan.camera.close().result(10)
    scan.path.unlink()
    with pytest.raises(OSError, match=f"tomogram 0: cannot open camera file {scan.path}"):
        scan.stop()
    assert writer.written == [] and list(tmp_path.iterdir()) == []



def test_tomogram_keys_named_by_an_ophyd_device_are_refused_with_the_fix(tmp_path, writer):
    scan = ScanRecorder(tmp_path, writer, tomogram_prefix="tomogram_")  # an ophyd Device named "tomogram"
    darks = scan.take("darks", [0.0] * 2)
    projections = scan.take("projections", GRID)
    scan.tomogram(0, darks=darks, flats_before=None, projections=projections, flats_after=None)
    with pytest.raises(DocumentContractError, match=r"it has \['tomogram_darks_start', .*'tomogram_tomogram'\] "
                       "instead: ophyd prefixes a Device's component names with the device name"):
        scan.stop()
    assert writer.written == []
