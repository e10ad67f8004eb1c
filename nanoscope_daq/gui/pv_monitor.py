"""Channel Access monitors of the console: each PV's latest value, and a time trend of a few.

pyepics calls back from its own thread; the callbacks only store the value (under a lock),
and the GUI reads what it needs when it redraws (``[gui] status_rate_hz``), so a fast PV
never floods the GUI thread with events. Monitors carry the control form, so enums arrive
with their state names. Channel Access must be configured
(:func:`nanoscope_daq.epics_env.configure_client`) before this module's first use.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np


class PVMonitor:
    """Monitors ``names`` (full PV names); enums and strings are kept as text, numbers as numbers.

    Parameters
    ----------
    names : Iterable[str]
        Every PV to monitor.
    trend_s : float
        Seconds of history kept for the PVs in ``trends``.
    trends : Iterable[str]
        PVs whose values are also kept against time (force, extension, gate edges).
    """

    def __init__(self, names: Iterable[str], trend_s: float, trends: Iterable[str] = ()) -> None:
        import epics

        self.trend_s = trend_s
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._connected: dict[str, bool] = {}
        self._trends: dict[str, collections.deque[tuple[float, float]]] = {name: collections.deque()
                                                                           for name in trends}
        self._pvs = [epics.PV(name, auto_monitor=True, form="ctrl", callback=self._on_value,
                              connection_callback=self._on_connection) for name in names]

    def _on_value(self, pvname: str, value: Any = None, char_value: Any = None, type: str = "", **_: Any) -> None:
        textual = "enum" in type or "string" in type or ("char" in type and np.ndim(value) > 0)
        kept = char_value if textual else value
        now = time.time()
        with self._lock:
            self._values[pvname] = kept
            trend = self._trends.get(pvname)
            if trend is not None and value is not None and np.ndim(value) == 0:  # enums: their index
                trend.append((now, float(value)))
                while trend and trend[0][0] < now - self.trend_s:
                    trend.popleft()

    def _on_connection(self, pvname: str, conn: bool, **_: Any) -> None:
        with self._lock:
            self._connected[pvname] = conn

    def value(self, name: str) -> Any:
        """The latest value of ``name`` (None before the first one arrives)."""
        with self._lock:
            return self._values.get(name)

    def connected(self, name: str) -> bool:
        """Whether ``name`` is connected now."""
        with self._lock:
            return self._connected.get(name, False)

    def trend(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Times (POSIX s) and values of ``name`` over the last ``trend_s`` seconds."""
        with self._lock:
            points = list(self._trends[name])
        if not points:
            return np.empty(0), np.empty(0)
        times, values = zip(*points)
        return np.asarray(times), np.asarray(values)

    def put(self, name: str, value: float) -> bool:
        """Write ``value`` to ``name``, wait for the IOC; whether it took it (its value reads back as written)."""
        pv = next(pv for pv in self._pvs if pv.pvname == name)
        pv.put(value, wait=True, timeout=5.0)
        written = pv.get(use_monitor=False, timeout=5.0)
        return written is not None and bool(np.isclose(float(written), value))

    def close(self) -> None:
        """Stop every monitor."""
        for pv in self._pvs:
            pv.clear_callbacks()
            pv.disconnect()
