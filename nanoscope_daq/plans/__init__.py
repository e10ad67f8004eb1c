"""bluesky plans of the microscope; each takes the Instrument first (DESIGN.md).

``PLANS`` names the plans ``nanoscope scan PLAN``, the queue and the console can run.
"""

from __future__ import annotations

from .errors import PlanParameterError
from .loading import continuous_loading, insitu_loading
from .registry import PLANS
from .series import time_series
from .source import source_off, source_on
from .subject import Subject
from .tomo import darks_flats, fly_tomo, step_tomo

__all__ = [
    "PLANS", "PlanParameterError", "Subject", "continuous_loading", "darks_flats", "fly_tomo", "insitu_loading",
    "source_off", "source_on", "step_tomo", "time_series",
]
