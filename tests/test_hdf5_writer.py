"""The HDF5 writer thread: areaDetector layout, back-pressure, codecs, SWMR and failures."""

from __future__ import annotations

import queue
import resource
import time

import h5py
import numpy as np
import pytest

from nanoscope_daq.sim.hdf5_writer import (
    AttributeInfo,
    Compression,
    FileRequest,
    Frame,
    Hdf5FrameWriter,
    WriterError,
)


def frame(index: int, shape=(32, 48), *, noisy: bool = False) -> Frame:
    data = (
        np.random.default_rng(index).integers(0, 4096, shape, dtype=np.uint16)
        if noisy
        else np.full(shape, index, dtype=np.uint16)
    )
    return Frame(index + 1, 1.7e9 + index, data, {"RotationAngle": 0.5 * index, "FrameType": 0.0})


@pytest.fixture
def writer():
    errors: list[str] = []
    w = Hdf5FrameWriter(4, on_error=errors.append)
    w.errors = errors
    yield w
    w.stop()


def write_file(writer: Hdf5FrameWriter, request: FileRequest, frames: list[Frame]):
    writer.open(request).result(10)
    futures = [writer.submit(f) for f in frames]
    summary = writer.close().result(30)
    return futures, summary


def test_frames_and_attributes_use_the_areadetector_layout(writer, tmp_path):
    request = FileRequest(tmp_path / "a.h5", attributes={"RotationAngle": AttributeInfo("stage angle", "deg")})
    futures, summary = write_file(writer, request, [frame(i) for i in range(5)])
    assert [f.result() for f in futures] == [0, 1, 2, 3, 4]
    assert (summary.frames_written, summary.frames_dropped, summary.error) == (5, 0, None)
    with h5py.File(tmp_path / "a.h5", "r") as h5:
        data = h5["entry/data/data"]
        assert data.shape == (5, 32, 48) and data.dtype == np.uint16
        assert [int(data[i, 0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]
        assert h5["entry/instrument/detector/data"] == data  # hard link, not a copy
        attrs = h5["entry/instrument/NDAttributes"]
        assert list(attrs["NDArrayUniqueId"][:]) == [1, 2, 3, 4, 5]
        assert attrs["NDArrayTimeStamp"][:] == pytest.approx(1.7e9 + np.arange(5))
        assert attrs["RotationAngle"][:] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0])
        assert attrs["RotationAngle"].attrs["units"] == "deg"
        assert h5["entry"].attrs["NX_class"] == "NXentry"


def test_a_full_queue_holds_the_producer_back_and_loses_nothing(tmp_path):
    writer = Hdf5FrameWriter(2)
    slow = FileRequest(tmp_path / "slow.h5", compression=Compression("zlib", zlevel=9))
    writer.open(slow).result(10)
    futures, refused = [], 0
    for i in range(40):
        try:
            futures.append(writer.submit(frame(i, (256, 256), noisy=True), block=False))
        except queue.Full:
            refused += 1
            futures.append(writer.submit(frame(i, (256, 256), noisy=True)))  # waits for room
    summary = writer.close().result(60)
    writer.stop()
    assert refused > 0, "the queue never filled: back-pressure untested"
    assert [f.result() for f in futures] == list(range(40))
    assert (summary.frames_written, summary.frames_dropped, writer.frames_dropped) == (40, 0, 0)
    with h5py.File(tmp_path / "slow.h5", "r") as h5:
        data = h5["entry/data/data"]
        assert data.shape[0] == 40
        assert np.array_equal(data[39], frame(39, (256, 256), noisy=True).data)


@pytest.mark.parametrize("codec", ["None", "zlib", "Blosc", "BSLZ4", "LZ4"])
def test_every_codec_round_trips(writer, tmp_path, codec):
    path = tmp_path / f"{codec}.h5"
    frames = [frame(i, (64, 64), noisy=True) for i in range(3)]
    write_file(writer, FileRequest(path, compression=Compression(codec)), frames)
    with h5py.File(path, "r") as h5:
        data = h5["entry/data/data"]
        assert np.array_equal(data[:], np.stack([f.data for f in frames]))
        filters = data.id.get_create_plist()
        assert filters.get_nfilters() == (0 if codec == "None" else 1)


def test_unsupported_codec_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="szip.*choose one of None, zlib, Blosc, BSLZ4, LZ4"):
        Compression("szip")


def test_swmr_readers_see_frames_at_each_flush(writer, tmp_path):
    path = tmp_path / "swmr.h5"
    writer.open(FileRequest(path, swmr=True, frames_per_flush=2)).result(10)
    for f in [writer.submit(frame(i)) for i in range(4)]:
        f.result(10)
    with h5py.File(path, "r", libver="latest", swmr=True) as reader:
        data = reader["entry/data/data"]
        data.refresh()
        assert data.shape[0] == 4
        angles = reader["entry/instrument/NDAttributes/RotationAngle"]
        angles.refresh()
        assert angles[:] == pytest.approx([0, 0.5, 1.0, 1.5])
    assert writer.close().result(10).frames_written == 4


def test_an_unwritable_directory_fails_the_open_with_the_reason(writer, tmp_path):
    not_a_directory = tmp_path / "plain-file"
    not_a_directory.write_text("x")
    with pytest.raises(WriterError, match=r"cannot create .*plain-file/sub/b\.h5: Not a directory"):
        writer.open(FileRequest(not_a_directory / "sub" / "b.h5")).result(10)
    assert writer.errors and "Not a directory" in writer.errors[0]
    futures, summary = write_file(writer, FileRequest(tmp_path / "after.h5"), [frame(0)])
    assert summary.frames_written == 1 and summary.error is None


def test_a_full_disk_counts_every_frame_not_written_and_keeps_earlier_files(writer, tmp_path):
    """RLIMIT_FSIZE makes write() fail with EFBIG, as ENOSPC on a full disk (Python ignores SIGXFSZ)."""
    first, _ = write_file(writer, FileRequest(tmp_path / "first.h5"), [frame(i, (256, 256)) for i in range(10)])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))
    try:
        writer.open(FileRequest(tmp_path / "full.h5")).result(10)
        futures = [writer.submit(frame(i, (256, 256))) for i in range(30)]
        summary = writer.close().result(30)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    failed = [f for f in futures if f.exception(10) is not None]
    assert 0 < summary.frames_written < 30
    assert len(failed) == summary.frames_dropped == 30 - summary.frames_written
    assert "File too large" in summary.error and "full.h5" in summary.error
    assert writer.errors == [summary.error]  # reported once, when it happened
    assert writer.frames_dropped == summary.frames_dropped
    with h5py.File(tmp_path / "first.h5", "r") as h5:
        assert h5["entry/data/data"].shape == (10, 256, 256)
        assert int(h5["entry/data/data"][9, 0, 0]) == 9
    _, after = write_file(writer, FileRequest(tmp_path / "after.h5"), [frame(0)])
    assert after.frames_written == 1 and after.error is None


def test_a_frame_of_another_shape_is_refused_and_counted(writer, tmp_path):
    writer.open(FileRequest(tmp_path / "shape.h5")).result(10)
    ok = writer.submit(frame(0, (32, 48)))
    wrong = writer.submit(frame(1, (16, 48)))
    summary = writer.close().result(10)
    assert ok.result() == 0
    with pytest.raises(WriterError, match=r"stop capture before changing binning"):
        wrong.result()
    assert (summary.frames_written, summary.frames_dropped) == (1, 1)


def test_stop_closes_the_open_file(tmp_path):
    writer = Hdf5FrameWriter(4)
    writer.open(FileRequest(tmp_path / "left-open.h5")).result(10)
    writer.submit(frame(0)).result(10)
    started = time.monotonic()
    writer.stop()
    assert time.monotonic() - started < 10
    with h5py.File(tmp_path / "left-open.h5", "r") as h5:
        assert h5["entry/data/data"].shape[0] == 1
    with pytest.raises(RuntimeError, match="writer thread has stopped"):
        writer.open(FileRequest(tmp_path / "x.h5"))


def test_nothing_open_means_the_frame_is_counted_not_lost_silently():
    writer = Hdf5FrameWriter(2)
    with pytest.raises(WriterError, match="no file open"):
        writer.submit(frame(0)).result(10)
    assert writer.frames_dropped == 1
    writer.stop()
