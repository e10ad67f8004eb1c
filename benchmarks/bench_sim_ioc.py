"""Cost of the simulated IOCs and the rotation stage's encoder update rate, over Channel Access.

Starts ``nanoscope sim`` (every simulated IOC, one process) on a free loopback port and
measures with psutil, for ``--duration`` seconds each:

* ``idle``: CPU of the IOC process with nothing moving (the motor records run nothing);
* ``rot_spinning``: CPU while the rotation stage turns continuously (jog at 30 deg/s),
  with one pyepics client monitoring ROT.RBV, whose update rate (events per second
  received), IOC-stamped rate and monitor latency (receipt minus IOC timestamp) are
  reported.

CPU % is of one core (100 % = one core busy). Usage:
python benchmarks/bench_sim_ioc.py [--duration 10] [--out benchmarks/results/bench_sim_ioc.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from nanoscope_daq.epics_env import configure_client, free_port
from nanoscope_daq.sim.process import SimProcess

RESULTS = Path(__file__).parent / "results" / "bench_sim_ioc.json"
PREFIX = "BENCH:"
SPIN_DEG_PER_S = 30.0


def cpu_percent(process: psutil.Process, seconds: float) -> float:
    """Mean CPU use of ``process`` (and its threads) over ``seconds``, in % of one core."""
    start_cpu, start = sum(process.cpu_times()[:2]), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (sum(process.cpu_times()[:2]) - start_cpu) / (time.monotonic() - start)


class ReadbackMonitor:
    """A pyepics monitor on one PV, recording receipt time and IOC timestamp of each event."""

    def __init__(self, epics, pvname: str) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[float, float]] = []
        self.pv = epics.PV(pvname, form="time", auto_monitor=True, callback=self._on_event)
        if not self.pv.wait_for_connection(timeout=10):
            raise RuntimeError(f"{pvname} did not connect")

    def _on_event(self, timestamp=None, **_) -> None:
        with self._lock:
            self.events.append((time.time(), timestamp))

    def take(self) -> np.ndarray:
        with self._lock:
            events, self.events = self.events, []
        return np.array(events)


def spinning_figures(events: np.ndarray, seconds: float) -> dict:
    received, stamped = events[:, 0], events[:, 1]
    latency_ms = 1e3 * (received - stamped)
    return {
        "rbv_events": int(len(events)),
        "rbv_rate_hz": round(len(events) / seconds, 1),
        "rbv_ioc_stamp_rate_hz": round((len(stamped) - 1) / (stamped[-1] - stamped[0]), 1),
        "rbv_max_gap_ms": round(1e3 * float(np.diff(received).max()), 1),
        "monitor_latency_ms_median": round(float(np.median(latency_ms)), 1),
        "monitor_latency_ms_p99": round(float(np.percentile(latency_ms, 99)), 1),
    }


def run(duration: float) -> dict:
    port = free_port()
    configure_client([port])  # before pyepics loads libca
    import epics

    with SimProcess(PREFIX, port) as sim:
        process = psutil.Process(sim.pid)
        rot = PREFIX + "ROT"
        monitor = ReadbackMonitor(epics, rot + ".RBV")
        time.sleep(2.0)  # let start-up work and connections settle
        idle = cpu_percent(process, duration)

        epics.caput(rot + ".JVEL", SPIN_DEG_PER_S, wait=True)
        epics.caput(rot + ".JOGF", 1, wait=True)
        time.sleep(1.0)  # past the 0.5 s ramp
        monitor.take()
        start = time.monotonic()
        spinning = cpu_percent(process, duration)
        events = monitor.take()
        seconds = time.monotonic() - start
        epics.caput(rot + ".JOGF", 0, wait=True)
        monitor.pv.disconnect()

    return {
        "duration_s": duration,
        "spin_deg_per_s": SPIN_DEG_PER_S,
        "cpu_percent_idle": round(idle, 2),
        "cpu_percent_rot_spinning": round(spinning, 2),
        **spinning_figures(events, seconds),
        "machine": {"platform": platform.platform(), "cpus": psutil.cpu_count(),
                    "load_avg_1min": round(psutil.getloadavg()[0], 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    args = parser.parse_args()
    result = run(args.duration)
    rows = [
        ("IOC CPU, idle", f"{result['cpu_percent_idle']:.1f} % of a core"),
        (f"IOC CPU, ROT spinning {SPIN_DEG_PER_S:g} deg/s", f"{result['cpu_percent_rot_spinning']:.1f} % of a core"),
        ("ROT.RBV monitor rate (received)", f"{result['rbv_rate_hz']:.0f} Hz"),
        ("ROT.RBV rate (IOC timestamps)", f"{result['rbv_ioc_stamp_rate_hz']:.0f} Hz"),
        ("ROT.RBV largest gap between events", f"{result['rbv_max_gap_ms']:.0f} ms"),
        ("monitor latency median / p99", f"{result['monitor_latency_ms_median']:.0f} / "
                                         f"{result['monitor_latency_ms_p99']:.0f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
