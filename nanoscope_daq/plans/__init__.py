"""bluesky plans of the microscope; each takes the Instrument first (DESIGN.md).

``PLANS`` names the plans ``nanoscope scan PLAN`` can run.
"""

from __future__ import annotations

from .errors import PlanParameterError
from .loading import continuous_loading, insitu_loading
from .series import time_series
from .subject import Subject
from .tomo import darks_flats, fly_tomo, step_tomo

PLANS = {
    plan.__name__: plan
    for plan in (darks_flats, step_tomo, fly_tomo, time_series, insitu_loading, continuous_loading)
}

__all__ = [
    "PLANS", "PlanParameterError", "Subject", "continuous_loading", "darks_flats", "fly_tomo", "insitu_loading",
    "step_tomo", "time_series",
]
