"""4D time series, in-situ loading to failure, respiratory gating and the per-subject dose budget."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nanoscope_daq.plans import PlanParameterError, fly_tomo, insitu_loading, step_tomo, time_series
from nanoscope_daq.plans.dose import DoseLedger

ATTRS = "entry/instrument/NDAttributes/"
MOUSE = {"subject_id": "M07", "cohort": "OVX", "treatment": "PTH", "day": 14, "anaesthesia": "isoflurane 2%"}


def frame_values(path: str, name: str) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5[ATTRS + name][()]


def test_time_series_of_three_tomograms_back_to_back(scan_bench):
    bench = scan_bench
    bench.run(time_series(bench.xrm, subject=MOUSE, tomograms=3, projections=120, range_deg=270.0, exposure_s=0.004,
                          config=bench.config))
    (start,) = bench.named("start")
    assert start["subject"]["subject_id"] == "M07" and start["scan"]["tomograms"] == 3
    events = [e["data"] for e in bench.events("tomograms")]
    assert [e["time_point"] for e in events] == [0, 1, 2]
    first = events[0]["grid_start_deg"]
    assert [e["grid_start_deg"] - first for e in events] == [0.0, 270.0, 540.0]  # one continuous rotation
    path = events[0]["file"]
    times, encoder = frame_values(path, "NDArrayTimeStamp"), frame_values(path, "EncoderAngle")
    for event in events:
        first, stop = event["projections_start"], event["projections_stop"]
        np.testing.assert_allclose(encoder[first:stop], event["grid_start_deg"] + np.arange(120) * 2.25, atol=1e-3)
    period = np.median(np.diff(times[events[0]["projections_start"]:events[0]["projections_stop"]]))
    dead = [times[b["projections_start"]] - times[a["projections_stop"] - 1] - period
            for a, b in zip(events, events[1:])]
    assert max(dead) < 2.0 and max(dead) < 2 * period  # back to back: no gap beyond one frame
    assert len(bench.nxtomo.written) == 3


def test_back_and_forth_series_reverses_and_tags_time_points(scan_bench):
    bench = scan_bench
    bench.run(time_series(bench.xrm, subject=dict(MOUSE, subject_id="M09"), tomograms=2, rotation="back-and-forth",
                          projections=60, range_deg=270.0, exposure_s=0.004, flats=0, config=bench.config))
    events = [e["data"] for e in bench.events("tomograms")]
    assert [e["grid_step_deg"] for e in events] == [4.5, -4.5]
    encoder = frame_values(events[1]["file"], "EncoderAngle")
    second = encoder[events[1]["projections_start"]:events[1]["projections_stop"]]
    assert second[0] == pytest.approx(events[1]["grid_start_deg"], abs=1e-3) and np.all(np.diff(second) < 0)
    assert (events[1]["grid_start_deg"] - events[0]["grid_start_deg"]) % 360 == pytest.approx(270.0)


def test_loading_series_ends_cleanly_when_the_specimen_fails(fresh_scan_bench):
    bench, load = fresh_scan_bench, fresh_scan_bench.xrm.load
    bench.run(insitu_loading(bench.xrm, loads_n=[5.0, 15.0, 30.0], projections=60, exposure_s=0.004,
                             config=bench.config))
    (stop,) = bench.named("stop")
    assert stop["exit_status"] == "success"
    assert "30 N" in stop["reason"] and "fail" in stop["reason"].lower()
    events = [e["data"] for e in bench.events("tomograms")]
    assert [e["force_n"] for e in events] == [5.0, 15.0]  # the 30 N step broke the specimen
    forces = frame_values(events[1]["file"], "Force")
    held = forces[events[1]["projections_start"]:events[1]["projections_stop"]]
    assert np.median(held) == pytest.approx(15.0, abs=1.0)
    assert load.specimen_state.get() == "Failed"
    assert load.holding.get() == 0 and load.done.get() == 1  # crosshead stopped, no hold left on
    assert len(bench.nxtomo.written) == 2


def test_prospective_gating_takes_frames_only_in_the_gate_retrospective_tags_them(scan_bench):
    bench = scan_bench
    bench.run(step_tomo(bench.xrm, projections=8, gating="prospective",
                        subject=dict(MOUSE, subject_id="M08"),
                        flats_when="none", darks=0, config=bench.config))
    (event,) = bench.events("tomograms")
    gated = frame_values(event["data"]["file"], "Gate")[event["data"]["projections_start"]:]
    assert len(gated) >= 8 and (gated[-8:] == 1).all()
    bench.run(fly_tomo(bench.xrm, projections=360, velocity=45.0, exposure_s=0.004,
                       gating="retrospective", subject=dict(MOUSE, subject_id="M08"), flats_when="none", darks=0,
                       config=bench.config))
    (event,) = bench.events("tomograms")
    data = event["data"]
    gate = frame_values(data["file"], "Gate")[data["projections_start"]:data["projections_stop"]]
    phase = frame_values(data["file"], "RespiratoryPhase")[data["projections_start"]:data["projections_stop"]]
    fraction = bench.xrm.physio.gate_fraction.get()
    # 4 s of free breathing: the gate is open for about gate_fraction of the frames, and every
    # frame carries its phase for binning later
    assert abs(gate.mean() - fraction) < 0.2
    assert phase.min() < 0.2 and phase.max() > 0.8
    assert bench.named("start")[0]["scan"]["gating"] == "retrospective"


def test_dose_is_booked_per_subject_and_a_scan_over_budget_is_refused(scan_bench):
    bench = scan_bench
    ledger = DoseLedger(bench.config.dose.ledger)
    before = ledger.delivered_gy("M99")
    bench.run(fly_tomo(bench.xrm, projections=90, exposure_s=0.004, subject=dict(MOUSE, subject_id="M99"),
                       config=bench.config))
    (start,) = bench.named("start")
    delivered = ledger.delivered_gy("M99") - before
    assert delivered > 0
    assert delivered == pytest.approx(start["dose"]["estimate_gy"], rel=0.6)
    budget = bench.config.dose.budget_gy
    ledger.record("M99", "earlier-study", "fly_tomo", 0.0, budget - delivered - before - 1e-4)
    moved = bench.xrm.rot.position
    with pytest.raises(PlanParameterError, match=r"Gy remain") as refused:
        bench.run(fly_tomo(bench.xrm, projections=90, exposure_s=0.004, subject=dict(MOUSE, subject_id="M99"),
                           config=bench.config))
    assert "0.000 Gy remain" in str(refused.value)
    assert bench.named("start") == [] and bench.xrm.rot.position == moved
