"""The online reconstruction callback fed documents and a camera file directly (no IOC): its rules and refusals.

DocumentScan writes the frames with the simulator's HDF5 writer and emits the documents
of docs/documents.md; the projections are exact parallel-beam line integrals of a 3D
Shepp-Logan phantom, so each volume can be compared with the one-shot reconstruction.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import DocumentLog
from document_scan import DocumentScan

from nanoscope_daq.config import load_config
from nanoscope_daq.pipeline.streaming import StreamingReconstruction
from nanoscope_daq.recon import FilterSpec, ParallelGeometry, reconstruct
from nanoscope_daq.recon.phantoms import project_ellipsoids, shepp_logan_3d
from nanoscope_daq.volume_files import read_labels

ROWS, COLS, ANGLES = 4, 32, 48
PIXEL_UM, MAGNIFICATION = 11.0, 20.0
OPEN, DARK = 30000.0, 100.0
START = {"plan_name": "fly_tomo", "scan": {"start_deg": 0.0, "range_deg": 180.0, "projections": ANGLES},
         "geometry": {"type": "parallel", "detector_pixel_um": PIXEL_UM, "magnification": MAGNIFICATION,
                      "rows": ROWS, "cols": COLS}}
GRID = np.arange(ANGLES) * 180.0 / ANGLES
GEOMETRY = ParallelGeometry(GRID, ROWS, COLS, PIXEL_UM * 1e-3 / MAGNIFICATION)
LINES = project_ellipsoids(shepp_logan_3d(0.4 * COLS * GEOMETRY.pixel_mm, value_per_mm=30.0), GEOMETRY)


pytestmark = pytest.mark.torch_threads(1)


class Recorder(DocumentLog):
    """The callback and what it published."""

    def __init__(self, **recon) -> None:
        config = load_config()
        config = dataclasses.replace(config, recon=dataclasses.replace(config.recon, zinger_threshold=0.0, **recon))
        self.docs: list[tuple[str, dict]] = []
        self.callback = StreamingReconstruction(config=config, publish=lambda name, doc: self.docs.append((name, doc)))

    def finish(self) -> None:
        assert self.callback.wait(60)
        self.callback.close()


def configured_filter() -> FilterSpec:
    recon = load_config().recon
    return FilterSpec(recon.filter, recon.filter_cutoff, recon.pad_mode)


def frames(lines: np.ndarray) -> np.ndarray:
    return (OPEN * np.exp(-lines) + DARK).astype(np.uint16)


def attributes(angles, current: float = 0.2, frame_type: float = 0.0) -> list[dict]:
    return [{"RotationAngle": float(a), "EncoderAngle": float(a), "SourceCurrent": current, "FrameType": frame_type}
            for a in angles]


def take_calibration(scan: DocumentScan, flats: bool = True):
    darks = scan.take("darks", np.full((2, ROWS, COLS), DARK, np.uint16), [0.0, 0.0], attributes([0, 0], 0.0, 2.0))
    if not flats:
        return darks, None
    return darks, scan.take("flats", frames(np.zeros((2, ROWS, COLS))), [0.1, 0.2], attributes([0, 0], 0.2, 1.0))


def test_beam_off_frames_are_skipped_and_a_retaken_angle_counts_once(tmp_path):
    recorder = Recorder()
    scan = DocumentScan(tmp_path, recorder.callback, START, (ROWS, COLS))
    darks, flats = take_calibration(scan)
    # angles 10-11 taken without beam (interlock), then re-taken after the last angle
    order = np.r_[np.arange(ANGLES), [10, 11]]
    current = np.where(np.isin(np.arange(order.size), [10, 11]), 0.0, 0.2)
    projections = scan.write(frames(LINES[order]), list(np.arange(order.size) + 1.0),
                             [{**a, "SourceCurrent": c} for a, c in zip(attributes(GRID[order]), current)])
    for lo in range(projections.start, projections.stop, 7):
        scan.announce("projections", lo, min(lo + 7, projections.stop))
    scan.tomogram(0, darks=darks, flats_before=flats, flats_after=None, projections=projections,
                  grid=(0.0, 180.0 / ANGLES, ANGLES))
    scan.stop()
    recorder.finish()
    assert recorder.named("stop")[0]["exit_status"] == "success"
    (volume,) = recorder.data("volumes")
    assert volume["projections"] == ANGLES
    expected = reconstruct(torch.as_tensor(-np.log((frames(LINES) - DARK) / OPEN), dtype=torch.float32), GEOMETRY,
                           algorithm="fourier", filter=configured_filter()).numpy()
    assert np.abs(volume["xy"] - expected[ROWS // 2]).max() < 1e-4 * np.abs(expected).max()


def test_projections_without_any_flats_fail_the_analysis_naming_the_fix_never_the_scan(tmp_path):
    recorder = Recorder()
    scan = DocumentScan(tmp_path, recorder.callback, START, (ROWS, COLS))
    darks, _ = take_calibration(scan, flats=False)
    projections = scan.take("projections", frames(LINES), list(np.arange(ANGLES) + 1.0), attributes(GRID))
    scan.tomogram(0, darks=darks, flats_before=None, flats_after=None, projections=projections,
                  grid=(0.0, 180.0 / ANGLES, ANGLES))
    scan.stop()
    recorder.finish()
    (stop,) = recorder.named("stop")
    assert stop["exit_status"] == "fail"
    assert "no flat fields" in stop["reason"] and "flats > 0" in stop["reason"]
    assert recorder.data("volumes") == []


def test_a_broken_document_fails_the_analysis_run_with_the_reason(tmp_path):
    recorder = Recorder()
    scan = DocumentScan(tmp_path, recorder.callback, START, (ROWS, COLS))
    take_calibration(scan)
    descriptor = scan.streams["projections"].descriptor_doc["uid"]
    datum = {"uid": "x/0", "stream_resource": "never-emitted", "descriptor": descriptor,
             "indices": {"start": 0, "stop": 4}, "seq_nums": {"start": 1, "stop": 5}}
    recorder.callback("stream_datum", datum)  # returns: the scan goes on
    scan.stop()
    recorder.finish()
    (stop,) = recorder.named("stop")
    assert stop["exit_status"] == "fail"
    assert "never-emitted" in stop["reason"] and "emit the stream_resource" in stop["reason"]


def test_a_start_document_without_geometry_numbers_is_refused_naming_the_key(tmp_path):
    recorder = Recorder()
    broken = {**START, "geometry": {k: v for k, v in START["geometry"].items() if k != "rows"}}
    scan = DocumentScan(tmp_path, recorder.callback, broken, (ROWS, COLS))
    scan.stop()
    recorder.finish()
    assert recorder.named("start") == []  # no analysis run for a scan it cannot reconstruct
    assert any("'rows'" in error for error in recorder.callback.errors)


def test_a_run_that_is_no_tomography_scan_is_ignored(tmp_path):
    recorder = Recorder()
    scan = DocumentScan(tmp_path, recorder.callback, {"plan_name": "count"}, (ROWS, COLS))
    scan.stop()
    recorder.finish()
    assert recorder.docs == [] and recorder.callback.errors == []


def test_cuda_without_a_cuda_device_is_refused_with_the_fix():
    if torch.cuda.is_available():
        pytest.fail("this test checks the refusal on a machine without CUDA")
    with pytest.raises(ValueError, match="set it to 'cpu'"):
        Recorder(online_device="cuda")


def test_with_online_segmentation_each_volume_is_segmented_into_a_labels_file(tmp_path):
    recorder = Recorder(online_segment=True)
    scan = DocumentScan(tmp_path, recorder.callback, START, (ROWS, COLS))
    darks, flats = take_calibration(scan)
    projections = scan.take("projections", frames(LINES), list(np.arange(ANGLES) + 1.0), attributes(GRID))
    scan.tomogram(0, darks=darks, flats_before=flats, flats_after=None, projections=projections,
                  grid=(0.0, 180.0 / ANGLES, ANGLES))
    scan.stop()
    recorder.finish()
    assert recorder.named("stop")[0]["exit_status"] == "success", recorder.callback.errors
    (labels,) = recorder.data("labels")
    labels_volume = read_labels(labels["labels_file"])
    assert labels_volume.data.shape == (ROWS, COLS, COLS)
    assert set(np.unique(labels_volume.data)) <= {0, 1, 2, 3}
    assert labels_volume.provenance["source"]["file"] == recorder.data("volumes")[0]["volume_file"]
