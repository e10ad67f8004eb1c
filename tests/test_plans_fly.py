"""Fly and step tomography against the simulated instrument: frames, angles, documents, files."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted
from conftest import wait_until

from nanoscope_daq.plans import fly_tomo, step_tomo

ATTRS = "entry/instrument/NDAttributes/"


def camera_file(bench) -> str:
    (event,) = bench.events("tomograms")
    return event["data"]["file"]


def read_attrs(path: str, *names: str):
    with h5py.File(path, "r") as h5:
        return [h5[ATTRS + name][()] for name in names]


def announced_indices(bench, stream: str, key: str = "image") -> list[tuple[int, int]]:
    resources = {r["uid"] for r in bench.named("stream_resource") if r["data_key"] == key}
    descriptors = {d["uid"] for d in bench.named("descriptor") if d["name"] == stream}
    return [
        (d["indices"]["start"], d["indices"]["stop"])
        for d in bench.named("stream_datum")
        if d["stream_resource"] in resources and d["descriptor"] in descriptors
    ]


def test_fly_scan_images_every_grid_angle_once_at_its_measured_angle(scan_bench):
    xrm = scan_bench.xrm
    missed_before = xrm.det.cam.missed_triggers.get()
    scan_bench.run(fly_tomo(xrm, projections=180, range_deg=270.0, exposure_s=0.004, config=scan_bench.config))
    (stop,) = scan_bench.named("stop")
    assert stop["exit_status"] == "success"
    assert stop["num_events"] == {"darks": 4, "flats": 8, "projections": 180, "tomograms": 1}
    (event,) = scan_bench.events("tomograms")
    data = event["data"]
    start, end = data["projections_start"], data["projections_stop"]
    assert (start, end) == (8, 188)
    path = camera_file(scan_bench)
    encoder, mid, frame_type, current = read_attrs(path, "EncoderAngle", "RotationAngle", "FrameType", "SourceCurrent")
    grid = data["grid_start_deg"] + np.arange(180) * 1.5
    resolution = xrm.rot.motor_resolution.get()
    # the PSO latches the encoder at each grid crossing: exact to the encoder's resolution
    np.testing.assert_allclose(encoder[start:end], grid, atol=resolution)
    velocity = scan_bench.named("start")[0]["scan"]["velocity_deg_s"]
    # the stage angle at mid-exposure is half an exposure further on, at constant speed
    np.testing.assert_allclose(mid[start:end] - encoder[start:end], velocity * 0.004 / 2, atol=2 * resolution)
    # darks, flats before, projections, flats after -- as the instrument itself saw them
    assert list(frame_type) == [2] * 4 + [1] * 4 + [0] * 180 + [1] * 4
    assert (current[start:end] > 0).all()
    assert xrm.det.cam.missed_triggers.get() == missed_before
    assert xrm.source.shutter.status.get() == "Closed"
    # the file of record: one NXtomo file, read by the tomography tools' own readers
    (nxs,) = scan_bench.nxtomo.written[-1:]
    from nxtomo import NXtomo
    from tomoscan.esrf.scan.nxtomoscan import NXtomoScan

    tomo = NXtomo().load(str(nxs), "entry")
    keys = np.array([int(getattr(key, "value", key)) for key in tomo.instrument.detector.image_key_control])
    assert (keys == 0).sum() == 180 and (keys == 1).sum() == 8 and (keys == 2).sum() == 4
    scan = NXtomoScan(str(nxs), "entry")
    assert len(scan.projections) == 180 and len(scan.flats) == 8 and len(scan.darks) == 4
    angles = np.asarray(tomo.sample.rotation_angle.magnitude if hasattr(tomo.sample.rotation_angle, "magnitude")
                        else tomo.sample.rotation_angle)
    np.testing.assert_allclose(angles[keys == 0], mid[start:end], atol=1e-9)
    assert scan.energy == pytest.approx(scan_bench.named("start")[0]["source"]["energy_kev"])
    with h5py.File(path, "r") as raw:
        first = raw["entry/data/data"][start]
    from silx.io.utils import get_data

    np.testing.assert_array_equal(get_data(scan.projections[min(scan.projections)]), first)


def test_fly_scan_announces_frames_in_chunks_while_it_runs(scan_bench):
    """A 3 s rotation is announced in several stream_datum chunks, each covering frames already in the file."""
    scan_bench.run(fly_tomo(scan_bench.xrm, projections=300, velocity=60.0, exposure_s=0.004,
                            config=scan_bench.config))
    chunks = announced_indices(scan_bench, "projections")
    assert len(chunks) >= 3
    assert chunks[0][0] == 8 and chunks[-1][1] == 308
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))  # contiguous, no frame twice
    for key in ("rotation_angle", "encoder_angle", "frame_time", "source_current", "gate", "respiratory_phase"):
        assert announced_indices(scan_bench, "projections", key) == chunks
    # seq_nums count the stream's frames 1..N
    descriptor = next(d for d in scan_bench.named("descriptor") if d["name"] == "projections")
    seqs = [d["seq_nums"] for d in scan_bench.named("stream_datum") if d["descriptor"] == descriptor["uid"]]
    assert seqs[0]["start"] == 1 and seqs[-1]["stop"] == 301


def test_step_scan_stops_at_each_angle(scan_bench):
    scan_bench.run(step_tomo(scan_bench.xrm, projections=12, range_deg=360.0, flats_when="before",
                             config=scan_bench.config))
    (event,) = scan_bench.events("tomograms")
    start, end = event["data"]["projections_start"], event["data"]["projections_stop"]
    assert end - start == 12
    mid, encoder = read_attrs(camera_file(scan_bench), "RotationAngle", "EncoderAngle")
    np.testing.assert_allclose(mid[start:end], np.arange(12) * 30.0, atol=1e-3)  # standing still
    assert np.isnan(encoder[start:end]).all()  # no PSO pulse started these frames


def test_pause_mid_fly_scan_resumes_without_losing_or_repeating_a_frame(scan_bench):
    xrm, bench = scan_bench.xrm, scan_bench
    fired_at_pause = []

    def pause_when_half_done():
        wait_until(lambda: bench.events("tomograms") == [] and bench.named("start")
                   and xrm.rot.pso.status.get() == "Armed" and xrm.rot.pso.fired.get() > 100,
                   timeout=60, what="half the fly scan")
        bench.RE.request_pause(defer=False)

    threading.Thread(target=pause_when_half_done, daemon=True).start()
    with pytest.raises(RunEngineInterrupted):
        bench.run(fly_tomo(xrm, projections=360, velocity=45.0, exposure_s=0.004,
                           config=bench.config))
    assert bench.RE.state == "paused"
    fired_at_pause.append(xrm.rot.pso.fired.get())
    assert xrm.source.shutter.status.get() == "Closed"
    assert xrm.rot.motor_done_move.get() == 1
    time.sleep(0.5)
    bench.RE.resume()
    (stop,) = bench.named("stop")
    assert stop["exit_status"] == "success"
    (event,) = bench.events("tomograms")
    start, end = event["data"]["projections_start"], event["data"]["projections_stop"]
    assert end - start == 360  # 0 lost, 0 duplicated
    encoder, current = read_attrs(camera_file(bench), "EncoderAngle", "SourceCurrent")
    grid = event["data"]["grid_start_deg"] + np.arange(360) * event["data"]["grid_step_deg"]
    np.testing.assert_allclose(encoder[start:end], grid, atol=xrm.rot.motor_resolution.get())
    assert (current[start:end] > 0).all()
    assert 100 < fired_at_pause[0] < 360


def test_views_prepared_before_a_fly_scan_are_the_views_it_images(scan_bench):
    """SIM:PREPARE_VIEWS renders the scan's mid-exposure angles ahead; the scan then renders no view itself."""
    from conftest import ca_write, ioc_get

    from nanoscope_daq.plans import source_on
    from nanoscope_daq.plans.tomo import angle_grid

    xrm, sim = scan_bench.xrm, f"{scan_bench.sim.prefix}SIM:"
    projections, start, velocity, exposure = 60, 0.37, 30.0, 0.004
    ca_write(f"{sim}VIEWS_COUNT", 0)
    with pytest.raises(Exception, match="VIEWS_COUNT"):  # refused by the IOC, with what to set
        ca_write(f"{sim}PREPARE_VIEWS", 1, notify=True, timeout=10)
    scan_bench.run(source_on(xrm, kv=60.0, power_w=10.0))

    grid = angle_grid(start, 360.0, projections)
    ca_write(f"{sim}VIEWS_START", grid.start_deg + velocity * exposure / 2)  # mid-exposure, rotating up
    ca_write(f"{sim}VIEWS_STEP", grid.step_deg)
    ca_write(f"{sim}VIEWS_COUNT", projections)
    ca_write(f"{sim}VIEWS_BINNING", 4)  # fly_tomo's default
    before = ioc_get(f"{sim}VIEWS_RENDERED")
    ca_write(f"{sim}PREPARE_VIEWS", 1, notify=True, timeout=120)
    assert ioc_get(f"{sim}VIEWS_READY") == projections and ioc_get(f"{sim}PREPARE_TIME") > 0
    time.sleep(1.0)  # VIEWS_RENDERED is read every 0.5 s
    rendered = ioc_get(f"{sim}VIEWS_RENDERED")
    assert 0 < rendered - before <= projections, (before, rendered)  # the module's earlier scans cached some

    scan_bench.run(fly_tomo(xrm, projections=projections, range_deg=360.0, start_deg=start, velocity=velocity,
                            exposure_s=exposure, config=scan_bench.config))
    (stop,) = scan_bench.named("stop")
    assert stop["exit_status"] == "success" and stop["num_events"]["projections"] == projections
    time.sleep(1.0)
    assert ioc_get(f"{sim}VIEWS_RENDERED") == rendered  # every projection found its view
