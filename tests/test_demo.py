"""`nanoscope demo` end to end, reduced to two sessions: a newcomer's first command runs the longitudinal study,
writes the report with its figures, catalogues every run and measures the remodelling the simulator applied."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

FIGURES = ("projection", "slices", "morphometry", "remodelling_map", "force_extension", "respiration", "dose")


def _row(out: str, name: str) -> list[float]:
    """The numbers of the first row named ``name`` of the demo's summary."""
    line = next(line for line in out.splitlines() if line.strip().startswith(name))
    return [float(v) for v in line.strip()[len(name):].split()]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_demo_runs_a_longitudinal_study_and_reports_it_against_the_ground_truth(tmp_path):
    out_dir = tmp_path / "study"
    result = subprocess.run(
        [sys.executable, "-m", "nanoscope_daq", "demo", "--out", str(out_dir), "--prefix", "DEMO:",
         "--days", "0", "10"],
        capture_output=True, text=True, timeout=1400, cwd=tmp_path,
    )
    out, err = result.stdout, result.stderr
    assert result.returncode == 0, out[-3000:] + err[-3000:]
    lines = out.strip().splitlines()
    assert str(out_dir) in lines[0] and lines[-1].endswith(str(out_dir))  # the output named first and last
    ready = re.search(r"nanoscope sim ready: prefix=DEMO: .* pid=(\d+)", out)
    assert ready, out[:2000]
    assert "caRepeater" not in out + err and "CA repeater" not in out + err  # libca's banners are gone
    assert "Tiled version" not in out + err

    # Two sessions of two gated tomograms, and the loading's tomogram at each of its two holds.
    nxtomo = re.findall(r"NXtomo file: (\S+\.nxs)", out)
    assert sum("time_series_" in p for p in nxtomo) == 4 and sum("insitu_loading_" in p for p in nxtomo) == 2
    for path in nxtomo:
        assert path.startswith(str(out_dir))
        with h5py.File(path, "r") as h5:
            assert h5["entry/definition"][()] == b"NXtomo"
            assert np.count_nonzero(h5["entry/instrument/detector/image_key"][()] == 0) in (180, 360)

    # The report and its figures, each a real PNG.
    report = (out_dir / "report.html").read_text()
    for name in FIGURES:
        png = out_dir / "figures" / f"{name}.png"
        assert f"figures/{name}.png" in report and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 10_000, name

    # Every run in the catalog, found by subject and day; the analyses linked to their raw runs.
    catalogued = re.findall(r"day\s+([\d.]+)\s+(\w+)\s+(\d+) projections\s+(\S+)(?:\s+of (\S+))?",
                            out.split("== The catalog")[-1])
    kinds = {(float(day), kind) for day, kind, *_ in catalogued}
    for day in (0.0, 10.0):
        assert {(day, "time_series"), (day, "online_reconstruction"), (day, "morphometry")} <= kinds, catalogued
    assert {(10.0, "insitu_loading"), (10.0, "remodeling")} <= kinds, catalogued
    raw = {uid for _, kind, _, uid, _ in catalogued if kind in ("time_series", "insitu_loading")}
    assert all(link in raw for _, kind, _, _, link in catalogued if kind in ("morphometry", "remodeling"))

    # The remodelling from the scans against what the simulator applied and its ground-truth labels: within 10 %.
    bfr = _row(out, "BFR (%/day)")
    assert bfr[0] == pytest.approx(bfr[1], rel=0.1)
    for name in ("MAR periosteal (um/day)", "MAR endosteal (um/day)", "MS/BS"):
        scans, truth, applied, _ = _row(out, name)
        assert scans == pytest.approx(applied, rel=0.1), name
    bv_tv = _row(out, "BV/TV")
    assert bv_tv[0] == pytest.approx(bv_tv[1], rel=0.05) and bv_tv[2] == pytest.approx(bv_tv[3], rel=0.05)
    stiffness = _row(out, "stiffness (N/mm, fit below 80 % of yield)")
    assert stiffness[0] == pytest.approx(stiffness[1], rel=0.15)

    assert "the simulated instrument is stopped" in out
    with pytest.raises(ProcessLookupError):
        os.kill(int(ready.group(1)), 0)
