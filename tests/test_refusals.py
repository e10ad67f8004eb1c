"""Every command refuses bad input with one line that names the problem and the fix: a catalogue.

Each entry runs the real ``nanoscope`` command line in its own process and asserts its
exit code (2: refused input), words of the problem and of the fix, that no traceback
was printed, and (for the scans, against a running simulator) that nothing moved.
The commands run two at a time, once per module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(900)
"""The module's fixture runs every entry (a refused scan starts Python, ophyd and a CA connection: about 7 s on
a loaded machine) before the first test; the project's 300 s per test is too short for the catalogue."""

MOUSE = '{"subject_id": "R01", "cohort": "OVX", "treatment": "PTH", "day": 14, "anaesthesia": "isoflurane 2%"}'


@dataclass(frozen=True)
class Refusal:
    """A command line and what its one-line refusal must say."""

    argv: tuple[str, ...]
    words: tuple[str, ...]
    scan: bool = False
    code: int = 2

    @property
    def id(self) -> str:
        return " ".join(self.argv).replace("/", "_")


def scan(plan: str, *args: str, words: tuple[str, ...]) -> Refusal:
    return Refusal(("scan", plan, *args), words, scan=True)


def command(*argv: str, words: tuple[str, ...]) -> Refusal:
    return Refusal(tuple(argv), words)


CATALOGUE = [
    # plan parameters, through nanoscope scan
    scan("fly_tomo", "--binning", "3", words=("binning", "choose one of (1, 2, 4, 8)")),
    scan("fly_tomo", "--projections", "1", words=("projections", "give at least 2")),
    scan("fly_tomo", "--projections", "0", words=("projections", "give at least 2")),
    scan("fly_tomo", "--range-deg", "0", words=("range_deg", "give a non-zero range")),
    scan("fly_tomo", "--range-deg", "5000", words=("range_deg", "up to 3600 deg")),
    scan("fly_tomo", "--range-deg", "180", words=("range_deg", "shorter than cone-beam", "give at least 181 deg")),
    scan("fly_tomo", "--exposure-s", "0", words=("exposure_s", "give a value")),
    scan("fly_tomo", "--exposure-s", "60", words=("exposure_s", "give at most")),
    scan("fly_tomo", "--exposure-s", "0.02", "--velocity", "200", words=("velocity", "turn at most")),
    scan("fly_tomo", "--velocity", "5000", words=("velocity", "give at most")),
    scan("fly_tomo", "--velocity", "-3", words=("velocity", "give a value above 0")),
    scan("fly_tomo", "--darks", "-1", words=("darks", "give at least 0")),
    scan("fly_tomo", "--flats-when", "sometimes", words=("flats_when", "choose one of")),
    scan("fly_tomo", "--kv", "90", words=("kv", "choose a value inside the range")),
    scan("fly_tomo", "--kv", "0", words=("kv", "give a value above 0")),
    scan("fly_tomo", "--power-w", "1000", words=("power_w", "enlarge the spot")),
    scan("fly_tomo", "--gating", "prospective", words=("gating", "use step_tomo(gating='prospective')")),
    scan("fly_tomo", "--gating", "retrospective", words=("subject", "needs the subject's metadata", "pass")),
    scan("fly_tomo", "--gating", "retrospective", "--subject", '{"subject_id": "R02"}',
         words=("subject.cohort", "give the subject's cohort")),
    scan("fly_tomo", "--gating", "retrospective", "--subject", MOUSE.replace("14", "-3"),
         words=("subject.day", "counted from day 0")),
    scan("fly_tomo", "--subject", '{"weight": 25}', words=("subject", "unknown field", "use only")),
    scan("fly_tomo", "--projections", "100000000", words=("projections", "scan.max_duration_s", "take fewer")),
    scan("fly_tomo", "--start-deg", "35990", words=("range_deg", "outside its limits", "inside the limits")),
    scan("step_tomo", "--gating", "sometimes", words=("gating", "choose one of")),
    scan("step_tomo", "--projections", "50000", words=("projections", "scan.max_duration_s")),
    scan("step_tomo", "--gating", "prospective", words=("subject", "pass")),
    scan("time_series", words=("subject", "needs the subject's metadata")),
    scan("time_series", "--subject", MOUSE, "--tomograms", "0", words=("tomograms", "give at least 1")),
    scan("time_series", "--subject", MOUSE, "--interval-s", "0.5", words=("interval_s", "give at least")),
    scan("time_series", "--subject", MOUSE, "--rotation", "sideways", words=("rotation", "choose one of")),
    scan("time_series", "--subject", MOUSE, "--flats-every", "-2", words=("flats_every", "give at least 0")),
    scan("time_series", "--subject", MOUSE, "--tomograms", "50", "--projections", "900",
         words=("dose", "raise dose.budget_gy")),
    scan("time_series", "--subject", MOUSE, "--gating", "prospective", words=("gating", "gating='retrospective'")),
    scan("insitu_loading", "--loads-n", "5", "45", words=("loads_n", "force limit", "lower the load")),
    scan("insitu_loading", "--hold-s", "-1", words=("hold_s", "give a value")),
    scan("continuous_loading", "--speed-mm-per-min", "50", words=("speed_mm_per_min", "give at most")),
    scan("continuous_loading", "--target-n", "500", words=("loads_n", "force limit")),
    scan("darks_flats", "--darks", "0", "--flats", "0", words=("darks/flats", "ask for at least one frame")),
    scan("source_on", "--kv", "500", words=("kv", "choose a value inside the range")),
    scan("source_on", "--power-w", "0", words=("power_w", "give a value above 0")),
    scan("source_on", "--power-w", "400", words=("power_w", "enlarge the spot")),
    # the command line itself
    scan("fly_tomo", "--projections", "many", words=("--projections", "invalid int value")),
    scan("fly_tomo", "--subject", "not json", words=("--subject", "not JSON")),
    scan("fly_tomo", "--no-such-option", "1", words=("unrecognized arguments", "--no-such-option")),
    command("scan", "no_such_plan", words=("invalid choice", "no_such_plan")),
    command("scan", "fly_tomo", "--port", "80", words=("epics.port", "between 1024 and 65535")),
    command("scan", "fly_tomo", "--config", "/no/such/file.toml", words=("/no/such/file.toml", "does not exist")),
    command("no-such-command", words=("invalid choice", "no-such-command")),
    # the simulator
    command("sim", "--port", "80", words=("epics.port", "between 1024 and 65535")),
    command("sim", "--data-dir", "/proc/1", words=("paths.data_dir", "is not writable", "give another directory")),
    command("sim", "--data-dir", "/proc/1/data", words=("paths.data_dir", "cannot be created", "create it")),
    command("sim", "--geometry", "fan", words=("--geometry", "invalid choice")),
    command("sim", "--time-scale", "-1", words=("sim.time_scale", "> 0")),
    # reconstruction, segmentation, morphometry, training (files made by the fixture)
    command("recon", "@missing@", "-o", "@out@/v.h5", words=("does not exist", "NXtomo")),
    command("recon", "@text@", "-o", "@out@/v.h5", words=("not a readable HDF5 file", "give an NXtomo")),
    command("recon", "@volume@", "-o", "@out@/v.h5", words=("NXtomo", "entry")),
    command("recon", "@volume@", "--algorithm", "magic", words=("--algorithm", "invalid choice")),
    command("segment", "@missing@", "-o", "@out@/l.h5", words=("does not exist", "existing HDF5 file")),
    command("segment", "@flat@", "-o", "@out@/l.h5", words=("not a z-y-x volume", "z axis of length 1")),
    command("segment", "@labels@", "-o", "@out@/l.h5", words=("no /volume dataset", "not a volume file")),
    command("segment", "@text@", "-o", "@out@/l.h5", words=("not a readable HDF5 file", "pass a volume file")),
    command("segment", "@volume@", "-o", "@out@/l.h5", "--model", "@missing@",
            words=("does not exist", "nanoscope train")),
    command("segment", "@volume@", "-o", "@out@/l.h5", "--device", "tpu", words=("--device", "invalid choice")),
    command("morphometry", "@missing@", words=("does not exist", "existing HDF5 file")),
    command("morphometry", "@float_labels@", words=("not label codes", "integer codes")),
    command("morphometry", "@volume@", words=("no /labels dataset", "not a labels file")),
    command("morphometry", "@flat_labels@", words=("not a z-y-x volume",)),
    command("morphometry", "@labels@", "--followup", "@missing@", "--days", "5", words=("does not exist",)),
    command("train", "-o", "@out@/m.pt", "--instrument", "nowhere", words=("unknown simulated instrument",)),
    # recovery of a scan whose process died
    command("recover", "@missing@", words=("does not exist", "paths.journal_dir")),
    command("recover", "@garbled@", words=("line 2 is not", "pass an unedited journal")),
    command("recover", "@gone@", words=("is gone", "restore it to that path")),
    # study analysis
    command("analyze", "@missing@", words=("does not exist", "give NXtomo files or directories")),
    command("analyze", "@out@", "--workers", "0", words=("--workers", "must be >= 1")),
    command("analyze", "@volume@", words=("has no /entry/sample/subject", "subject metadata")),
]
assert len(CATALOGUE) >= 60


def _with_files(word: str, files: dict[str, str]) -> str:
    """``word`` with each ``@name@`` replaced by the fixture file of that name."""
    for name, path in files.items():
        word = word.replace(f"@{name}@", path)
    return word


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Inputs for the file commands: a volume, labels, a 2-D volume, float labels, a text file, journals."""
    root = tmp_path_factory.mktemp("refusals")

    def h5(name: str, dataset: str, data: np.ndarray) -> str:
        with h5py.File(root / name, "w") as f:
            f[dataset] = data
            f[dataset].attrs["voxel_size_um"] = 2.0
        return str(root / name)

    (root / "notes.txt").write_text("not HDF5")
    start = json.dumps({"name": "start", "doc": {"uid": "run-1", "time": 0.0}})
    (root / "garbled.jsonl").write_text(f"{start}\n{{not json\n{start}\n")
    resource = {"uid": "r-1", "data_key": "image", "mimetype": "application/x-hdf5", "run_start": "run-1",
                "uri": f"file://localhost{root}/gone.h5", "parameters": {"dataset": "/entry/data/data"}}
    (root / "gone.jsonl").write_text(f"{start}\n{json.dumps({'name': 'stream_resource', 'doc': resource})}\n")
    return {
        "volume": h5("volume.h5", "volume", np.zeros((4, 8, 8), np.float32)),
        "labels": h5("labels.h5", "labels", np.full((4, 8, 8), 2, np.uint8)),
        "flat": h5("flat.h5", "volume", np.zeros((8, 8), np.float32)),
        "flat_labels": h5("flat_labels.h5", "labels", np.zeros((8, 8), np.uint8)),
        "float_labels": h5("float_labels.h5", "labels", np.full((4, 8, 8), 2.0, np.float32)),
        "text": str(root / "notes.txt"),
        "garbled": str(root / "garbled.jsonl"),
        "gone": str(root / "gone.jsonl"),
        "missing": str(root / "missing.h5"),
        "out": str(root / "out"),
    }


@pytest.fixture(scope="module")
def second_bench(sim_factory, tmp_path_factory):
    """A second scan-ready instrument, so that the refused scans run in two lanes (see ``outcomes``)."""
    from conftest import ScanBench, start_tiny_sim

    bench = ScanBench(*start_tiny_sim(sim_factory, tmp_path_factory))
    yield bench
    sim_factory.stop(bench.sim)


@pytest.fixture(scope="module")
def outcomes(scan_bench, second_bench, files) -> dict[str, subprocess.CompletedProcess]:
    """Every entry run once, in two lanes, with each instrument's state before and after the scans."""

    def state(bench) -> tuple:
        """Positions, frames acquired, shutter and high voltage (a refusal that needs the camera's frame
        period may have applied the scan's readout settings: they move nothing and expose nothing)."""
        xrm = bench.xrm
        return (xrm.rot.position, xrm.sx.position, xrm.det.cam.array_counter.get(use_monitor=False),
                xrm.source.shutter.status.get(use_monitor=False), xrm.source.hv.get(use_monitor=False))

    def run(refusal: Refusal, bench) -> subprocess.CompletedProcess:
        argv = [_with_files(word, files) for word in refusal.argv]
        if refusal.scan:
            argv += ["--prefix", bench.sim.prefix, "--port", str(bench.sim.port), "--config", str(bench.config_path)]
        return subprocess.run([sys.executable, "-m", "nanoscope_daq", *argv], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env=dict(os.environ), timeout=180)

    def run_lane(lane: tuple[list[Refusal], object]) -> list[subprocess.CompletedProcess]:
        refusals, bench = lane
        return [run(refusal, bench) for refusal in refusals]

    benches = (scan_bench, second_bench)
    before = [state(bench) for bench in benches]
    # Each lane runs its scans one after the other against an instrument of its own (a scan that takes the
    # instrument's lock to learn the camera's frame period would refuse another one beside it); the other
    # commands are shared out between the lanes.
    scans = [r for r in CATALOGUE if r.scan]
    others = [r for r in CATALOGUE if not r.scan]
    lanes = [(scans[i::2] + others[i::2], bench) for i, bench in enumerate(benches)]
    with ThreadPoolExecutor(len(lanes)) as pool:
        done = pool.map(run_lane, lanes)
        results = {r.id: p for (refusals, _), batch in zip(lanes, done) for r, p in zip(refusals, batch)}
    results["_state"] = (before, [state(bench) for bench in benches])
    return results


@pytest.mark.parametrize("refusal", CATALOGUE, ids=[r.id for r in CATALOGUE])
def test_each_bad_input_is_refused_in_one_line_naming_the_problem_and_the_fix(outcomes, refusal):
    result = outcomes[refusal.id]
    assert result.returncode == refusal.code, result.stderr[-1500:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for words in refusal.words:
        assert words in result.stderr, (words, result.stderr[-1500:])


def test_no_refused_scan_moved_or_acquired_anything(outcomes):
    before, after = outcomes["_state"]
    names = ("rotation", "sx", "frames acquired", "shutter", "high voltage")
    for instrument_before, instrument_after in zip(before, after, strict=True):
        assert dict(zip(names, instrument_after)) == dict(zip(names, instrument_before))


def test_the_catalogue_ids_are_unique():
    assert len({r.id for r in CATALOGUE}) == len(CATALOGUE)
