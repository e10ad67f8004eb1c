"""The one volume/labels file format: what is written is what is read back, provenance included."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

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
    with pytest.raises(ValueError, match="has no /labels dataset"):
        read_labels(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_volume(tmp_path / "missing.h5")
