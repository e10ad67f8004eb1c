"""Anaesthetised mouse: respiration waveform and gate, heart rate, body temperature, alarms.

Breathing runs in real time (``clock.now()``): its timing is what gated acquisition
measures. A breath is a short inspiration and expiration (``breath_active_s``) followed
by a long end-expiratory pause; the gate window is the last ``gate_fraction`` of each
cycle and always lies within that pause. The breathing rate drifts slowly (an
Ornstein-Uhlenbeck process in process time) and varies from breath to breath; heart
rate and temperature drift the same way. Everything is deterministic from the seed:
the breath sequence is generated lazily, in fixed blocks, so any time can be asked in
any order with the same answer.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.signal import lfilter

from ...config import PhysiologyConfig, PhysiologyModelConfig
from ..clock import SimClock

#: The drift keeps the breathing rate within this factor range of its configured mean.
RATE_DRIFT_BOUNDS = (0.5, 1.5)
#: Grid steps per drift time constant of the Ornstein-Uhlenbeck processes.
OU_STEPS_PER_TIME_CONSTANT = 50
BLOCK = 256


class LimitRefused(ValueError):
    """An alarm limit that would leave no valid range; the message names both limits."""


class OrnsteinUhlenbeck:
    """A zero-mean OU process (stationary std ``sigma``, time constant ``tau``) on a regular grid.

    Starts at 0 (the vital at its configured value), extends itself in fixed blocks as
    later times are asked, and interpolates linearly between grid points.
    """

    def __init__(self, sigma: float, tau: float, rng: np.random.Generator) -> None:
        self.step = tau / OU_STEPS_PER_TIME_CONSTANT
        self._decay = math.exp(-self.step / tau)
        self._kick = sigma * math.sqrt(1 - self._decay**2)
        self._rng = rng
        self._values = np.zeros(1)

    def _extend_to(self, t_max: float) -> None:
        while (len(self._values) - 1) * self.step < t_max:
            noise = self._rng.standard_normal(BLOCK)
            block, _ = lfilter([self._kick], [1.0, -self._decay], noise, zi=[self._decay * self._values[-1]])
            self._values = np.concatenate([self._values, block])

    def at(self, t: ArrayLike) -> np.ndarray:
        t = np.maximum(np.asarray(t, dtype=float), 0.0)
        self._extend_to(float(np.max(t, initial=0.0)))
        grid = np.arange(len(self._values)) * self.step
        return np.interp(t, grid, self._values)


@dataclass(frozen=True)
class VitalSpec:
    """How a vital is named in messages."""

    label: str
    unit: str


VITALS: dict[str, VitalSpec] = {
    "rate": VitalSpec("respiration rate", "bpm"),
    "heart_rate": VitalSpec("heart rate", "bpm"),
    "temperature": VitalSpec("body temperature", "C"),
}


class PhysiologyModel:
    """The mouse the monitor watches: vectorised functions of real time ``t`` (seconds since sim start)."""

    def __init__(self, config: PhysiologyModelConfig, alarms: PhysiologyConfig, clock: SimClock,
                 seed: int = 0) -> None:
        self.config = config
        self.clock = clock
        drift_rng, breath_rng, heart_rng, temp_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
        )
        self._rate_drift = OrnsteinUhlenbeck(config.respiration_drift_bpm, config.respiration_drift_time_s, drift_rng)
        self._heart_drift = OrnsteinUhlenbeck(config.heart_rate_drift_bpm, config.vitals_drift_time_s, heart_rng)
        self._temp_drift = OrnsteinUhlenbeck(config.temperature_drift_c, config.vitals_drift_time_s, temp_rng)
        self._breath_rng = breath_rng
        self._starts = np.zeros(1)  # breath k lasts from _starts[k] to _starts[k + 1]
        self._amplitudes = np.zeros(0)
        self._active = np.zeros(0)  # fraction of breath k spent inspiring + expiring
        self._lock = threading.Lock()
        self.limits: dict[str, tuple[float, float]] = alarms.alarm_limits()

    # ---- breath sequence -------------------------------------------------------------

    def _extend_breaths(self, t_max: float) -> None:
        cfg = self.config
        low, high = (f * cfg.respiration_rate_bpm for f in RATE_DRIFT_BOUNDS)
        while self._starts[-1] <= t_max:
            jitter = self._breath_rng.standard_normal((BLOCK, 2))
            starts = np.empty(BLOCK + 1)
            starts[0] = self._starts[-1]
            for k in range(BLOCK):
                drift = float(self._rate_drift.at(self.clock.to_process(starts[k])))
                rate = min(high, max(low, cfg.respiration_rate_bpm + drift))
                starts[k + 1] = starts[k] + 60.0 / rate * math.exp(cfg.respiration_variability * jitter[k, 0])
            periods = np.diff(starts)
            self._starts = np.concatenate([self._starts, starts[1:]])
            self._amplitudes = np.concatenate(
                [self._amplitudes, cfg.respiration_amplitude_mm * np.exp(cfg.respiration_variability * jitter[:, 1])]
            )
            self._active = np.concatenate(
                [self._active, np.minimum(cfg.breath_active_s / periods, 1.0 - cfg.gate_fraction)]
            )

    def _breath_index(self, t: np.ndarray) -> np.ndarray:
        with self._lock:
            self._extend_breaths(float(np.max(t, initial=0.0)))
            return np.searchsorted(self._starts, t, side="right") - 1

    @staticmethod
    def _times(t: ArrayLike) -> np.ndarray:
        return np.maximum(np.asarray(t, dtype=float), 0.0)

    def breath_starts(self, t0: float, t1: float) -> np.ndarray:
        """Start times of the inspirations in ``[t0, t1)``."""
        with self._lock:
            self._extend_breaths(t1)
            starts = self._starts
        return starts[(starts >= t0) & (starts < t1)]

    def phase_at(self, t: ArrayLike) -> np.ndarray:
        """Respiratory phase in [0, 1): 0 at the start of inspiration."""
        t = self._times(t)
        k = self._breath_index(t)
        return (t - self._starts[k]) / (self._starts[k + 1] - self._starts[k])

    def displacement_at(self, t: ArrayLike) -> np.ndarray:
        """Chest displacement (mm): raised-cosine inspiration and expiration, then a flat pause at 0."""
        t = self._times(t)
        k = self._breath_index(t)
        phase = (t - self._starts[k]) / (self._starts[k + 1] - self._starts[k])
        u = phase / self._active[k]  # 0..1 through the active part of the breath
        share = self.config.inspiration_share
        inspiring = 0.5 * (1 - np.cos(np.pi * np.clip(u / share, 0, 1)))
        expiring = 0.5 * (1 + np.cos(np.pi * np.clip((u - share) / (1 - share), 0, 1)))
        shape = np.where(u < share, inspiring, np.where(u < 1, expiring, 0.0))
        return self._amplitudes[k] * shape

    def gated_at(self, t: ArrayLike) -> np.ndarray:
        """True in end-expiration: the last ``gate_fraction`` of each breathing cycle."""
        return self.phase_at(t) >= 1.0 - self.config.gate_fraction

    def rate_at(self, t: ArrayLike) -> np.ndarray:
        """Breathing rate (breaths/min) of the breath under way at ``t``."""
        t = self._times(t)
        k = self._breath_index(t)
        return 60.0 / (self._starts[k + 1] - self._starts[k])

    def next_gate_edge(self, t: float) -> float:
        """Time of the first gate opening or closing after ``t``."""
        t = max(float(t), 0.0)
        k = int(self._breath_index(np.asarray(t)))
        start, end = self._starts[k], self._starts[k + 1]
        opening = start + (1.0 - self.config.gate_fraction) * (end - start)
        return opening if t < opening else end

    # ---- slow vitals -----------------------------------------------------------------

    def heart_rate_at(self, t: ArrayLike) -> np.ndarray:
        """Heart rate (beats/min), drifting in process time."""
        return self.config.heart_rate_bpm + self._heart_drift.at(self.clock.to_process(self._times(t)))

    def temperature_at(self, t: ArrayLike) -> np.ndarray:
        """Body temperature (deg C), drifting in process time."""
        return self.config.body_temperature_c + self._temp_drift.at(self.clock.to_process(self._times(t)))

    def vitals_at(self, t: float) -> dict[str, float]:
        """The vitals the alarm watches, keyed as in :data:`VITALS`."""
        return {
            "rate": float(self.rate_at(t)),
            "heart_rate": float(self.heart_rate_at(t)),
            "temperature": float(self.temperature_at(t)),
        }

    # ---- alarms ----------------------------------------------------------------------

    def set_limits(self, vital: str, low: float, high: float) -> None:
        """Alarm when ``vital`` is at or beyond ``low``/``high`` (EPICS LOLO/HIHI semantics)."""
        spec = VITALS[vital]
        if not low < high:
            raise LimitRefused(
                f"{spec.label} alarm limits refused: the low limit ({low:g} {spec.unit}) must be below "
                f"the high limit ({high:g} {spec.unit})"
            )
        self.limits[vital] = (float(low), float(high))

    def alarms(self, vitals: dict[str, float]) -> list[str]:
        """One message per vital out of its limits, naming the value and the limit; empty when all is well."""
        messages = []
        for name, value in vitals.items():
            spec, (low, high) = VITALS[name], self.limits[name]
            if value <= low:
                messages.append(f"{spec.label} {value:.1f} {spec.unit} at or below the low limit {low:g} {spec.unit}")
            elif value >= high:
                messages.append(f"{spec.label} {value:.1f} {spec.unit} at or above the high limit {high:g} {spec.unit}")
        return messages
