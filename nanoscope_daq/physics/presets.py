"""Small specimens for quick simulations: a sub-millimetre 'tiny leg' that renders in milliseconds.

The anatomy keeps the tibia's layout and the lacunae's real sizes and density; only the
bone, the soft tissue and the study are scaled down, so that tests, CI and demos on slow
machines can image and rasterise it at micrometre voxels in seconds.
"""

from __future__ import annotations

from typing import Any

from ..config import Config

TINY_LEG_PHANTOM: dict[str, Any] = {
    "periosteal_semi_axis_x_mm": 0.085, "periosteal_semi_axis_y_mm": 0.075,
    "endosteal_semi_axis_x_mm": 0.030, "endosteal_semi_axis_y_mm": 0.025,
    "bone_centre_x_mm": 0.0, "bone_centre_y_mm": 0.0, "bone_length_mm": 0.4,
    "soft_tissue_semi_axis_x_mm": 0.130, "soft_tissue_semi_axis_y_mm": 0.120,
    "soft_tissue_centre_x_mm": 0.0, "soft_tissue_centre_y_mm": 0.0, "soft_tissue_length_mm": 0.8,
    "trabecula_count": 0, "haversian_canal_count": 2, "haversian_diameter_min_um": 6.0,
    "haversian_diameter_max_um": 8.0, "haversian_length_min_mm": 0.1, "haversian_length_max_mm": 0.25,
    "transcortical_canal_count": 1, "transcortical_diameter_min_um": 8.0, "transcortical_diameter_max_um": 10.0,
    "pits_per_day": 0.5, "pit_depth_min_um": 5.0, "pit_depth_max_um": 10.0, "pit_width_min_um": 15.0,
    "pit_width_max_um": 25.0, "max_study_day": 10.0,
}
"""A tibia of 170 um x 150 um with 50 um of cortex, in 260 um x 240 um of soft tissue."""

TINY_DETECTOR: dict[str, Any] = {"pixels_x": 144, "pixels_y": 96}
"""144 x 96 pixels: with the default cone beam (M = 5) 2.2 um voxels over a 0.32 mm field."""

TINY_RENDER_CACHE: dict[str, Any] = {"render_cache_mb": 64.0}
"""Projections of so small a detector need little cache."""


def tiny_leg_overrides() -> dict[str, dict[str, Any]]:
    """The tiny leg and detector as configuration overrides (e.g. for ``nanoscope sim --config``)."""
    return {"detector": dict(TINY_DETECTOR),
            "sim": {"phantom": dict(TINY_LEG_PHANTOM), "detector": dict(TINY_RENDER_CACHE)}}


def tiny_leg_config(config: Config, **sections: dict[str, Any]) -> Config:
    """``config`` with the tiny leg and detector, then ``sections`` overrides (validated like a file)."""
    tiny = config.replace(**tiny_leg_overrides())
    return tiny.replace(**sections) if sections else tiny
