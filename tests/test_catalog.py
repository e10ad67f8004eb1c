"""The run catalog: frames as rows of the camera file, an unreachable catalog, ingest, and docs/catalog.md.

Runs come from the document helper (a real camera file written by the simulator's HDF5
writer, documents as a plan emits them) into the embedded catalog (Tiled's SQLite), and
are read back through the Tiled client.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_nxtomo_writer import START, ScanRecorder

from nanoscope_daq.config import load_config, overrides_toml
from nanoscope_daq.epics_env import free_port
from nanoscope_daq.pipeline.analysis_run import AnalysisRun
from nanoscope_daq.pipeline.catalog import CatalogWriter, backup_directory, open_catalog

DOCS = Path(__file__).parents[1] / "docs" / "catalog.md"


def _config(root: Path, **catalog):
    path = root / "config.toml"
    path.write_text(overrides_toml({"paths": {"data_dir": str(root / "data")}, **({"catalog": catalog} if catalog
                                                                                 else {})}))
    (root / "data").mkdir(exist_ok=True)
    return path, load_config(path, environment=False)


def _record(directory: Path, callback, *, day: int = 14) -> ScanRecorder:
    """A time point: darks, flats before, 15 projections, flats after (flats are two runs of rows)."""
    start = {**START, "subject": {**START["subject"], "day": day}}
    scan = ScanRecorder(directory, callback, start=start)
    darks = scan.take("darks", [0.0] * 3)
    before = scan.take("flats", [0.0] * 4)
    projections = scan.take("projections", np.arange(15) * 12.0)
    after = scan.take("flats", [0.0] * 4)
    scan.tomogram(0, darks=darks, projections=projections, flats_before=before, flats_after=after)
    scan.stop()
    return scan


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The embedded catalog holding one recorded time point and its analysis run."""
    root = tmp_path_factory.mktemp("catalog")
    path, config = _config(root)
    writer = CatalogWriter.from_config(config)
    scan = _record(config.paths.data_path, writer)
    analysis = AnalysisRun(writer, scan.bundle.start_doc, "online_reconstruction", {})
    analysis.event("volumes", {"volume_file": str(root / "volume.h5"), "tomogram": 0,
                               "preview": np.ones((4, 4), np.float32)})
    analysis.stop()
    writer.close()
    return path, config, scan


def test_a_streams_frames_are_its_rows_of_the_camera_file(embedded):
    _, config, scan = embedded
    run = open_catalog(config)[scan.bundle.start_doc["uid"]]
    pixels = np.stack(scan.acquired.pixels)
    np.testing.assert_array_equal(run["darks"]["image"].read(), pixels[0:3])
    np.testing.assert_array_equal(run["projections"]["image"].read(), pixels[7:22])
    np.testing.assert_array_equal(run["flats"]["image"].read(), pixels[np.r_[3:7, 22:26]])  # before and after
    np.testing.assert_allclose(run["projections"]["rotation_angle"].read(), np.arange(15) * 12.0)
    (asset,) = run["projections"]["image"].data_sources()[0].assets
    assert asset.data_uri.endswith(str(scan.path))  # linked, not copied
    assert run.metadata["stop"]["exit_status"] == "success"


def test_an_analysis_run_keeps_its_links_and_leaves_previews_to_live_clients(embedded):
    from tiled.queries import Key

    _, config, scan = embedded
    (analysis,) = open_catalog(config).search(Key("start.raw_run_uid") == scan.bundle.start_doc["uid"]).values()
    volumes = analysis["volumes"].read()
    assert list(volumes["volume_file"]) == [str(Path(config.paths.data_path).parent / "volume.h5")]
    assert "preview" not in volumes


def test_the_documented_query_finds_the_series_and_loads_frames_angles_and_volumes(embedded, monkeypatch):
    path, config, scan = embedded
    monkeypatch.setenv("NANOSCOPE_CONFIG", str(path))
    (block,) = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    namespace: dict = {}
    exec(compile(block, str(DOCS), "exec"), namespace)  # the documentation's own lines, as written
    assert namespace["start"]["subject"]["subject_id"] == "M07"
    np.testing.assert_array_equal(namespace["first_frame"], scan.acquired.pixels[7])
    np.testing.assert_allclose(namespace["angles"], np.arange(15) * 12.0)
    assert list(namespace["tomograms"]["projections_start"]) == [7]
    assert namespace["nxtomo_files"] == [str(scan.path.with_name(f"{scan.path.stem}_000.nxs"))]
    assert namespace["volume_files"] == [str(Path(config.paths.data_path).parent / "volume.h5")]


def test_no_run_is_lost_when_the_catalog_is_down(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path, config = _config(tmp_path, uri=dead)
    writer = CatalogWriter.from_config(config)
    scan = _record(config.paths.data_path, writer, day=21)
    writer.close()  # the scan itself never waited for the catalog
    uid = scan.bundle.start_doc["uid"]
    backup = backup_directory(config) / f"{uid}.jsonl"
    assert backup.exists()

    # Later, into the (embedded) catalog the data directory has.
    local = tmp_path / "local.toml"
    local.write_text(overrides_toml({"paths": {"data_dir": str(config.paths.data_path)}}))
    result = subprocess.run([sys.executable, "-m", "nanoscope_daq", "catalog", "ingest", str(backup), "--config",
                             str(local)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert uid in result.stdout
    run = open_catalog(load_config(local, environment=False))[uid]
    np.testing.assert_array_equal(run["projections"]["image"].read(), np.stack(scan.acquired.pixels)[7:22])
    assert run.metadata["stop"]["exit_status"] == "success"


def test_ingest_refuses_a_file_that_is_not_a_backup(tmp_path):
    bogus = tmp_path / "notes.jsonl"
    bogus.write_text("this is not a document\nnor is this\n")
    path, _ = _config(tmp_path)
    result = subprocess.run([sys.executable, "-m", "nanoscope_daq", "catalog", "ingest", str(bogus), "--config",
                             str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "notes.jsonl line 1 is not a {\"name\", \"doc\"} document" in result.stderr
    assert "Traceback" not in result.stderr
