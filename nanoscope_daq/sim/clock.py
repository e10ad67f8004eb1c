"""The simulator's time: real seconds, and accelerated 'process time' for slow processes."""

from __future__ import annotations

import time


class SimClock:
    """Monotonic time since the simulator started.

    ``now()`` is real time, used by motors, the camera and breathing, whose timing
    scans measure. ``process_now()`` runs ``time_scale`` times faster and drives slow
    processes (source warm-up and ramps, loading frame, relaxation, drift).
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.time_scale = time_scale
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def process_now(self) -> float:
        return self.now() * self.time_scale

    def to_process(self, real_seconds: float) -> float:
        """A real duration expressed in process seconds."""
        return real_seconds * self.time_scale

    def to_real(self, process_seconds: float) -> float:
        """A process duration expressed in real seconds."""
        return process_seconds / self.time_scale
