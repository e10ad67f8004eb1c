"""The one volume/labels file format: what is written is what is read back, provenance included."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nanoscope_daq.errors import RefusedInput
from nanoscope_daq.volume_files import Volume, VolumeWriter, read_labels, read_volume, write_labels


def test_a_volume_written_slab_by_slab_reads_back_with_its_provenance(tmp_path):
    path = tmp_path / "volume.h5"
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    angles = np.linspace(0.0, 180.0, 7)
    with VolumeWriter(path, data.shape, 1.5) as writer:
        writer.write(0, data[:2])
        writer.write(2, data[2:])
        writer.provenance({"algorithm": "fbp", "cor_column": 2.5, "geometry": {"type": "parallel"},
                           "frames": [3, 4, 5]}, angles)
    volume = read_volume(path)
    assert np.array_equal(volume.data, data) and volume.voxel_size_um == 1.5
    provenance = volume.provenance
    assert (provenance["algorithm"], provenance["cor_column"]) == ("fbp", 2.5)
    assert provenance["geometry"] == {"type": "parallel"} and provenance["frames"] == [3, 4, 5]
    assert np.array_equal(provenance["angles_deg"], angles) and "h5py" in provenance["software"]


def test_labels_carry_the_volumes_provenance_as_their_source(tmp_path):
    """What `nanoscope segment` does: the labels' provenance nests the volume's (angles become a list)."""
    volume_path, labels_path = tmp_path / "volume.h5", tmp_path / "labels.h5"
    with VolumeWriter(volume_path, (2, 3, 3), 0.5) as writer:
        writer.write(0, np.zeros((2, 3, 3), np.float32))
        writer.provenance({"algorithm": "fourier"}, np.array([0.0, 90.0]))
    volume = read_volume(volume_path)
    labels = np.ones((2, 3, 3), np.uint8)
    write_labels(labels_path, Volume(labels, 0.5, {"model": "unet", "source": {"file": str(volume_path),
                                                                              **volume.provenance}}),
                 extra={"envelope": np.zeros((2, 3, 3), np.uint8)})
    read = read_labels(labels_path)
    assert np.array_equal(read.data, labels) and read.voxel_size_um == 0.5
    assert read.provenance["model"] == "unet" and read.provenance["source"]["algorithm"] == "fourier"
    assert read.provenance["source"]["angles_deg"] == [0.0, 90.0]
    with h5py.File(labels_path) as h5:
        assert h5["envelope"].shape == (2, 3, 3)


def test_a_file_without_the_dataset_is_refused_naming_the_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["data"] = np.zeros((2, 2, 2))
    with pytest.raises(RefusedInput, match="has no /labels dataset"):
        read_labels(path)
    with pytest.raises(RefusedInput, match="does not exist"):
        read_volume(tmp_path / "missing.h5")


@pytest.mark.parametrize("data, words", [
    (np.zeros((4, 4)), "not a z-y-x volume"),
    (np.full((2, 2, 2), 2.0, dtype=np.float32), "are not label codes"),
    (np.full((2, 2, 2), 300, dtype=np.int32), "do not fit uint8"),
])
def test_labels_that_are_not_codes_are_refused_not_cast(tmp_path, data, words):
    with pytest.raises(RefusedInput, match=words):
        write_labels(tmp_path / "labels.h5", Volume(data, 1.0))
    with h5py.File(tmp_path / "raw.h5", "w") as h5:
        h5["labels"] = data
        h5["labels"].attrs["voxel_size_um"] = 1.0
    with pytest.raises(RefusedInput, match=words):
        read_labels(tmp_path / "raw.h5")


def test_a_two_dimensional_volume_is_refused_naming_the_fix(tmp_path):
    with h5py.File(tmp_path / "slice.h5", "w") as h5:
        h5["volume"] = np.zeros((8, 8), dtype=np.float32)
        h5["volume"].attrs["voxel_size_um"] = 1.0
    with pytest.raises(RefusedInput, match="not a z-y-x volume.*z axis of length 1"):
        read_volume(tmp_path / "slice.h5")


def test_a_file_whose_writer_died_is_read_through_swmr(tmp_path):
    """A volume file left marked open for writing (its writer was killed) is still readable."""
    import subprocess
    import sys

    path = tmp_path / "open.h5"
    script = (
        "import h5py, numpy as np, os\n"
        f"h5 = h5py.File({str(path)!r}, 'w', libver='latest')\n"
        "d = h5.create_dataset('volume', data=np.ones((2, 3, 4), np.float32))\n"
        "d.attrs['voxel_size_um'] = 2.0\n"
        "h5.swmr_mode = True\n"
        "h5.flush()\n"
        "os._exit(0)\n"  # no close: the file keeps its 'open for writing' mark
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    with pytest.raises(OSError):
        h5py.File(path, "r").close()
    volume = read_volume(path)
    assert volume.data.shape == (2, 3, 4) and volume.voxel_size_um == 2.0
