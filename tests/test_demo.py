"""`nanoscope demo` end to end: a newcomer's first command runs the 4D in-vivo study and gets it right."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest


def _row(out: str, name: str) -> list[float]:
    """The numbers of one row of the demo's remodelling table."""
    line = next(line for line in out.splitlines() if line.startswith(name))
    return [float(v) for v in line[len(name):].split()]


def _subject_and_dose(nxs: str) -> tuple[bytes, float, float, float]:
    """Subject id, study day, dose delivered before and the session's dose estimate (Gy) of an NXtomo file."""
    with h5py.File(nxs, "r") as h5:
        sample = h5["entry/sample"]
        return (sample["subject/subject_id"][()], float(sample["subject/day"][()]),
                float(sample["dose/delivered_before_gy"][()]), float(sample["dose/estimate_gy"][()]))


@pytest.mark.slow
def test_demo_runs_a_4d_in_vivo_study_and_measures_the_remodelling_applied(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nanoscope_daq", "demo", "--out", str(tmp_path), "--prefix", "DEMO:"],
        capture_output=True, text=True, timeout=900,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    ready = re.search(r"nanoscope sim ready: prefix=DEMO: .* pid=(\d+)", out)
    assert ready, out[:2000]
    for step in ("demo_warm_up", "demo_ramp"):
        assert f"generator {step}" in out, f"step {step} did not complete"
    assert (tmp_path / "demo.toml").is_file()

    # Two sessions of two tomograms, each a complete NXtomo file of a full turn.
    nxtomo = re.findall(r"NXtomo file: (\S+\.nxs)", out)
    assert len(nxtomo) == 4
    for path in nxtomo:
        assert path.startswith(str(tmp_path))
        with h5py.File(path, "r") as h5:
            assert h5["entry/definition"][()] == b"NXtomo"
            keys = h5["entry/instrument/detector/image_key"][()]
            assert np.count_nonzero(keys == 0) == 360 and np.count_nonzero(keys == 1) > 0
            assert np.ptp(h5["entry/sample/rotation_angle"][()][keys == 0]) > 355
    # One mouse, on day 0 then day 10; the second session's dose adds to the first's in the ledger.
    first, second = (_subject_and_dose(path) for path in nxtomo[::2])
    assert first[:2] == (b"M01", 0.0) and second[:2] == (b"M01", 10.0)
    assert first[2] == 0.0 and second[2] > 0.5 * first[3]  # booked as delivered: below the session's estimate

    # Online: every tomogram as a whole, per respiratory phase bin and gated, each a readable volume.
    volumes = re.findall(r"online volume: (\S+_recon\.h5)", out)
    assert len(volumes) == 4 * 4
    for path in volumes:
        with h5py.File(path, "r") as h5:
            assert h5["volume"].ndim == 3 and np.isfinite(h5["volume"][()]).all()

    # The remodelling measured from the scans against the ground truth and what the simulator applied.
    bfr_scans, bfr_truth = _row(out, "BFR (%/day)")
    mar_peri = _row(out, "MAR periosteal (um/day)")
    mar_endo = _row(out, "MAR endosteal (um/day)")
    assert bfr_scans == pytest.approx(bfr_truth, rel=0.3)
    assert mar_peri[0] == pytest.approx(mar_peri[2], rel=0.3) and mar_peri[1] == pytest.approx(mar_peri[2], rel=0.1)
    assert mar_endo[0] == pytest.approx(mar_endo[2], rel=0.3) and mar_endo[1] == pytest.approx(mar_endo[2], rel=0.15)
    assert _row(out, "MS/BS")[0] > 0.9 and _row(out, "ES/BS")[0] < 0.1

    # Every run in the catalog, found by subject: each session's scan with its frames, and its online analysis.
    catalogued = re.findall(r"day\s+([\d.]+)\s+(\w+)\s+(\d+) projections", out.split("== The catalog")[-1])
    for day in (0.0, 10.0):
        kinds = {kind: int(frames) for d, kind, frames in catalogued if float(d) == day}
        assert kinds.get("online_reconstruction") == 0, catalogued
        assert max(kinds.values()) == 720, catalogued  # two tomograms of 360 projections, frames in the camera file

    assert "the simulated instrument is stopped" in out
    with pytest.raises(ProcessLookupError):
        os.kill(int(ready.group(1)), 0)
