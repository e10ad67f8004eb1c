"""`nanoscope demo` end to end: a newcomer's first command must work."""

from __future__ import annotations

import re
import subprocess
import sys

import h5py
import pytest


@pytest.mark.slow
def test_demo_runs_the_start_up_sequence_and_stops_the_simulator(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nanoscope_daq", "demo", "--out", str(tmp_path), "--prefix", "DEMO:"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "nanoscope sim ready: prefix=DEMO:" in out
    for step in ("demo_warm_up", "demo_ramp", "demo_turn", "demo_loading", "demo_frames", "demo_unload"):
        assert f"generator {step}" in out, f"step {step} did not complete"
    # The loading table ends at the last load step, held at 10 N by the load cell.
    loading = out.split("== 4.")[1].split("== 5.")[0]
    forces = [float(m) for m in re.findall(r"\|\s+(\d+\.\d{3})\s+\|\s+\d+\.\d{4}\s+\|\s*$", loading, re.M)]
    assert forces and abs(forces[-1] - 10.0) < 0.3, loading
    files = re.findall(r"data file: (\S+\.h5)", out)
    assert len(files) == 1 and files[0].startswith(str(tmp_path))
    with h5py.File(files[0], "r") as h5:
        frames = h5["entry/data/data"]
        assert frames.shape[0] == 3 and frames.shape[1:] == (512, 512)
        assert (h5["entry/instrument/NDAttributes/FrameType"][:] == 0).all()  # projections
        assert abs(h5["entry/instrument/NDAttributes/Force"][-1] - 10.0) < 0.5
    assert "the simulated instrument is stopped" in out
