"""Dose: estimated before a scan, measured while it runs, accumulated per subject in SQLite.

The dose rate at the sample follows the source's power, distance and high voltage with a
calibration constant from the configuration ([dose]); the dose of a scan is that rate
times the time the shutter is open with the specimen in the beam (flats, with the
specimen moved out, and darks count nothing).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from .errors import PlanParameterError


@dataclass(frozen=True)
class DoseModel:
    """Absorbed dose rate at the sample from the source settings (config [dose] and [geometry])."""

    calibration_gy_per_ws: float
    reference_distance_mm: float
    reference_kv: float
    kv_exponent: float
    source_sample_mm: float

    @classmethod
    def from_config(cls, config: Config) -> DoseModel:
        dose = config.dose
        return cls(dose.calibration_gy_per_ws, dose.reference_distance_mm, dose.reference_kv, dose.kv_exponent,
                   config.geometry.source_sample_mm)

    def rate_gy_per_s(self, kv: float, power_w: float) -> float:
        distance = (self.reference_distance_mm / self.source_sample_mm) ** 2
        return self.calibration_gy_per_ws * power_w * distance * (kv / self.reference_kv) ** self.kv_exponent


class DoseLedger:
    """Cumulative dose per subject, one row per run, in an SQLite file shared by every scan."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS deliveries (subject_id TEXT NOT NULL, time REAL NOT NULL, "
                "run_uid TEXT, plan TEXT, estimated_gy REAL, delivered_gy REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30.0)

    def delivered_gy(self, subject_id: str) -> float:
        with self._connect() as db:
            (total,) = db.execute(
                "SELECT COALESCE(SUM(delivered_gy), 0) FROM deliveries WHERE subject_id = ?", (subject_id,)
            ).fetchone()
        return float(total)

    def deliveries(self, subject_id: str) -> list[tuple[str, str, float]]:
        """(run uid, plan, dose delivered in Gy) of every run of ``subject_id``, in the order they were booked."""
        with self._connect() as db:
            rows = db.execute("SELECT run_uid, plan, delivered_gy FROM deliveries WHERE subject_id = ? ORDER BY time",
                              (subject_id,)).fetchall()
        return [(str(uid), str(plan), float(gy)) for uid, plan, gy in rows]

    def record(self, subject_id: str, run_uid: str, plan: str, estimated_gy: float, delivered_gy: float) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?)",
                (subject_id, time.time(), run_uid, plan, estimated_gy, delivered_gy),
            )

    def check_budget(self, subject_id: str, estimate_gy: float, budget_gy: float) -> float:
        """Dose already delivered; raises if ``estimate_gy`` more would exceed ``budget_gy``."""
        delivered = self.delivered_gy(subject_id)
        remaining = budget_gy - delivered
        if estimate_gy > remaining:
            raise PlanParameterError(
                "dose",
                f"this scan would deliver about {estimate_gy:.3f} Gy to {subject_id}, who has {delivered:.3f} Gy of "
                f"the {budget_gy:g} Gy budget already: {max(remaining, 0.0):.3f} Gy remain",
                "scan fewer tomograms, a shorter exposure or lower power, "
                "or raise dose.budget_gy if the protocol allows",
            )
        return delivered


class DoseMeter:
    """Measures the time the shutter is open with the specimen in the beam (CA monitor of the shutter)."""

    def __init__(self, shutter_status, rate_gy_per_s: float) -> None:
        self._status = shutter_status
        self.rate_gy_per_s = rate_gy_per_s
        self._lock = threading.Lock()
        self._open_since: float | None = None
        self._sample_in = True
        self.exposed_s = 0.0
        self._cid = None

    def start(self) -> None:
        self._cid = self._status.subscribe(self._on_shutter, run=True)

    def stop(self) -> float:
        """Stop measuring; returns the dose delivered (Gy)."""
        if self._cid is not None:
            self._status.unsubscribe(self._cid)
            self._cid = None
        with self._lock:
            self._account_locked(time.monotonic())
            self._open_since = None
        return self.delivered_gy

    @property
    def delivered_gy(self) -> float:
        return self.exposed_s * self.rate_gy_per_s

    def sample_in_beam(self, inside: bool) -> None:
        """The specimen moves into (True) or out of (False) the field."""
        now = time.monotonic()
        with self._lock:
            self._account_locked(now)
            self._sample_in = inside

    def _on_shutter(self, value, **_) -> None:
        now = time.monotonic()
        with self._lock:
            self._account_locked(now)
            self._open_since = now if value == "Open" else None

    def _account_locked(self, now: float) -> None:
        if self._open_since is not None:
            if self._sample_in:
                self.exposed_s += now - self._open_since
            self._open_since = now
