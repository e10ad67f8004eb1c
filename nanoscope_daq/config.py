"""One TOML-backed configuration for the whole instrument.

Defaults live only in ``default_config.toml`` (shipped with the package, every key
documented there). A user file overrides any subset. Unknown keys and bad values
raise :class:`ConfigError` naming the dotted key and what would be valid.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RefusedInput

CONFIG_ENV_VAR = "NANOSCOPE_CONFIG"


class ConfigError(RefusedInput):
    """A configuration key is unknown, missing or out of range."""


def _check(predicate: Callable[[Any], bool], requirement: str) -> dict:
    """Field metadata: ``predicate(value)`` must hold, else the key 'must be <requirement>'."""
    return {"check": (predicate, requirement)}


def positive() -> dict:
    return _check(lambda v: v > 0, "> 0")


def non_negative() -> dict:
    return _check(lambda v: v >= 0, ">= 0")


def fraction() -> dict:
    return _check(lambda v: 0 <= v <= 1, "between 0 and 1")


def one_of(*choices: str) -> dict:
    return _check(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


CALIBRATION_PARAMETERS = ("cor", "tilt", "roll", "distance", "offset_col", "offset_row")
"""Geometry parameters the reconstruction can calibrate from the data (recon/calibrate.py)."""
RECON_ALGORITHMS = ("fbp", "fdk", "fourier")
"""Reconstruction algorithms (recon/algorithms.py)."""
RECON_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
"""Ramp filter windows (recon/filters.py)."""


def parameter_names(text: str) -> tuple[str, ...]:
    """The names of a comma-separated list (``"cor, tilt"``), blanks dropped."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


# ---- the instrument: what a real installation edits ---------------------------------------


@dataclass(frozen=True)
class EpicsConfig:
    prefix: str = field(metadata=_check(lambda v: v != "" and " " not in v, "a non-empty PV prefix without spaces"))
    port: int = field(metadata=_check(lambda v: 1024 <= v <= 65535, "a port between 1024 and 65535"))
    heartbeat_timeout_s: float = field(metadata=_check(lambda v: 0.5 <= v <= 60, "between 0.5 and 60 s"))
    connection_timeout_s: float = field(metadata=_check(lambda v: 0.5 <= v <= 60, "between 0.5 and 60 s"))


@dataclass(frozen=True)
class PathsConfig:
    data_dir: str
    journal_dir: str

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def journal_path(self) -> Path:
        """Where scans journal their documents: ``journal_dir``, or ``<data_dir>/journal`` when empty."""
        return Path(self.journal_dir).expanduser() if self.journal_dir else self.data_path / "journal"

    def validate(self, key: str) -> None:
        if self.journal_path.exists() and not self.journal_path.is_dir():
            raise ConfigError(f"{key}.journal_dir: {self.journal_path} is a file, not a directory; set "
                              f"{key}.journal_dir to a directory (or leave it empty for <data_dir>/journal)")


GEOMETRY_KINDS = ("cone", "parallel")
"""The imaging geometries: a lab source's cone beam, or a transmission X-ray microscope's parallel beam."""
CONTRASTS = ("absorption", "zernike")
"""The contrast mechanisms: absorption, or the TXM phase ring's Zernike phase contrast."""


@dataclass(frozen=True)
class GeometryConfig:
    """The imaging geometry: lab cone beam or transmission X-ray microscope (parallel beam)."""

    kind: str = field(metadata=one_of(*GEOMETRY_KINDS))
    contrast: str = field(metadata=one_of(*CONTRASTS))
    source_sample_mm: float = field(metadata=positive())
    source_detector_mm: float = field(metadata=positive())
    objective_magnification: float = field(metadata=positive())

    def validate(self, key: str) -> None:
        if self.source_detector_mm <= self.source_sample_mm:
            raise ConfigError(
                f"{key}.source_detector_mm ({self.source_detector_mm}) must exceed {key}.source_sample_mm "
                f"({self.source_sample_mm}): the detector sits behind the sample"
            )


@dataclass(frozen=True)
class AxisConfig:
    description: str
    egu: str
    low_limit: float
    high_limit: float
    velocity: float = field(metadata=positive())
    max_velocity: float = field(metadata=positive())
    acceleration: float = field(metadata=positive())
    precision: int = field(metadata=non_negative())
    resolution: float = field(metadata=positive())

    def validate(self, key: str) -> None:
        if self.low_limit >= self.high_limit:
            raise ConfigError(f"{key}.low_limit ({self.low_limit}) must be below {key}.high_limit ({self.high_limit})")
        if self.velocity > self.max_velocity:
            raise ConfigError(f"{key}.velocity ({self.velocity}) exceeds {key}.max_velocity ({self.max_velocity})")


@dataclass(frozen=True)
class StagesConfig:
    rot: AxisConfig
    sx: AxisConfig
    sy: AxisConfig
    sz: AxisConfig

    def axes(self) -> dict[str, AxisConfig]:
        return {"rot": self.rot, "sx": self.sx, "sy": self.sy, "sz": self.sz}


@dataclass(frozen=True)
class SourceConfig:
    """The X-ray source's anode and the limits plans and the source controller enforce."""

    anode: str
    kv_min: float = field(metadata=positive())
    kv_max: float = field(metadata=positive())
    power_max_w: float = field(metadata=positive())
    power_per_um_spot_w: float = field(metadata=positive())
    spot_min_um: float = field(metadata=positive())
    spot_max_um: float = field(metadata=positive())
    spot_default_um: float = field(metadata=positive())

    def validate(self, key: str) -> None:
        if self.kv_min >= self.kv_max:
            raise ConfigError(f"{key}.kv_min must be below {key}.kv_max")
        if not self.spot_min_um <= self.spot_default_um <= self.spot_max_um:
            raise ConfigError(f"{key}.spot_default_um must lie between spot_min_um and spot_max_um")


@dataclass(frozen=True)
class LoadCellConfig:
    """The loading stage: its capacity, travel, speeds and control settings."""

    force_capacity_n: float = field(metadata=positive())
    force_limit_default_n: float = field(metadata=positive())
    speed_default_mm_per_min: float = field(metadata=positive())
    speed_min_mm_per_min: float = field(metadata=positive())
    speed_max_mm_per_min: float = field(metadata=positive())
    extension_min_mm: float
    extension_max_mm: float
    stable_band_n: float = field(metadata=positive())
    stable_time_s: float = field(metadata=non_negative())
    load_control_band_n: float = field(metadata=positive())

    def validate(self, key: str) -> None:
        if self.force_limit_default_n > self.force_capacity_n:
            raise ConfigError(f"{key}.force_limit_default_n exceeds the cell's force_capacity_n")
        if self.extension_min_mm >= self.extension_max_mm:
            raise ConfigError(f"{key}.extension_min_mm must be below {key}.extension_max_mm")
        if not self.speed_min_mm_per_min <= self.speed_default_mm_per_min <= self.speed_max_mm_per_min:
            raise ConfigError(
                f"{key}.speed_default_mm_per_min must lie between {key}.speed_min_mm_per_min "
                f"and {key}.speed_max_mm_per_min"
            )
        if not self.extension_min_mm <= 0.0 <= self.extension_max_mm:
            raise ConfigError(f"{key}.extension_min_mm .. extension_max_mm must include the zero position 0")


@dataclass(frozen=True)
class PhysiologyConfig:
    """The physiology monitor's alarm limits."""

    respiration_alarm_low_bpm: float
    respiration_alarm_high_bpm: float
    heart_rate_alarm_low_bpm: float
    heart_rate_alarm_high_bpm: float
    temperature_alarm_low_c: float
    temperature_alarm_high_c: float

    def alarm_limits(self) -> dict[str, tuple[float, float]]:
        """(low, high) of each vital, keyed as the monitor names them: 'rate', 'heart_rate', 'temperature'."""
        return {
            "rate": (self.respiration_alarm_low_bpm, self.respiration_alarm_high_bpm),
            "heart_rate": (self.heart_rate_alarm_low_bpm, self.heart_rate_alarm_high_bpm),
            "temperature": (self.temperature_alarm_low_c, self.temperature_alarm_high_c),
        }

    def validate(self, key: str) -> None:
        keys = {"rate": "respiration_alarm_{}_bpm", "heart_rate": "heart_rate_alarm_{}_bpm",
                "temperature": "temperature_alarm_{}_c"}
        for vital, (low, high) in self.alarm_limits().items():
            if low >= high:
                name = keys[vital]
                raise ConfigError(f"{key}.{name.format('low')} must be below {key}.{name.format('high')}")


@dataclass(frozen=True)
class CameraConfig:
    """The camera's exposure range, which plans check before anything moves."""

    exposure_min_s: float = field(metadata=positive())
    exposure_max_s: float = field(metadata=positive())

    def validate(self, key: str) -> None:
        if self.exposure_min_s >= self.exposure_max_s:
            raise ConfigError(f"{key}.exposure_min_s must be below {key}.exposure_max_s")


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's size and pixel pitch at the detector plane."""

    pixels_x: int = field(metadata=_check(lambda v: 8 <= v <= 16384, "between 8 and 16384"))
    pixels_y: int = field(metadata=_check(lambda v: 8 <= v <= 16384, "between 8 and 16384"))
    pixel_um: float = field(metadata=positive())


@dataclass(frozen=True)
class ScanConfig:
    darks: int = field(metadata=non_negative())
    flats: int = field(metadata=non_negative())
    flats_axis: str = field(metadata=one_of("sx", "sy", "sz"))
    flats_offset_mm: float
    announce_period_s: float = field(metadata=positive())
    fly_rate_fraction: float = field(metadata=_check(lambda v: 0 < v <= 1, "above 0 and at most 1"))
    taxi_margin_deg: float = field(metadata=non_negative())
    flush_frames: int = field(metadata=_check(lambda v: v >= 1, ">= 1"))
    gate_timeout_s: float = field(metadata=positive())
    frame_stall_timeout_s: float = field(metadata=positive())
    max_duration_s: float = field(metadata=positive())
    free_space_margin: float = field(metadata=_check(lambda v: v >= 1, ">= 1"))


@dataclass(frozen=True)
class DoseConfig:
    calibration_gy_per_ws: float = field(metadata=non_negative())
    reference_distance_mm: float = field(metadata=positive())
    reference_kv: float = field(metadata=positive())
    kv_exponent: float
    budget_gy: float = field(metadata=positive())
    ledger_path: str

    @property
    def ledger(self) -> Path:
        return Path(self.ledger_path).expanduser()


@dataclass(frozen=True)
class ReconConfig:
    algorithm: str = field(metadata=one_of(*RECON_ALGORITHMS))
    filter: str = field(metadata=one_of(*RECON_FILTERS))
    filter_cutoff: float = field(metadata=_check(lambda v: 0 < v <= 1, "above 0 and at most 1"))
    pad_mode: str = field(metadata=one_of("edge", "zero"))
    fourier_kernel_width: int = field(metadata=_check(lambda v: 2 <= v <= 12, "between 2 and 12"))
    min_transmission: float = field(metadata=_check(lambda v: 0 < v < 1, "strictly between 0 and 1"))
    zinger_threshold: float = field(metadata=non_negative())
    ring_filter_px: int = field(metadata=_check(lambda v: v == 0 or (v >= 3 and v % 2 == 1), "0 or an odd number >= 3"))
    min_projections: int = field(metadata=_check(lambda v: v >= 2, ">= 2"))
    max_angle_gap_deg: float = field(metadata=_check(lambda v: 0 < v <= 180, "above 0 and at most 180"))
    cor_search_px: float = field(metadata=positive())
    cor_step_px: float = field(metadata=positive())
    memory_limit_gb: float = field(metadata=positive())
    calibration_max_pixels: int = field(metadata=_check(lambda v: v >= 16, ">= 16"))
    calibration_max_angles: int = field(metadata=_check(lambda v: v >= 16, ">= 16"))
    calibration_evaluations: int = field(metadata=_check(lambda v: v >= 1, ">= 1"))
    online: bool
    online_max_pixels: int = field(metadata=_check(lambda v: v >= 16, ">= 16"))
    online_algorithm: str = field(metadata=one_of("fbp", "fourier"))
    online_device: str = field(metadata=one_of("cpu", "cuda"))
    online_cor_offset_px: float
    online_phase_bins: int = field(metadata=_check(lambda v: v >= 0, ">= 0"))
    online_slices_interval_s: float = field(metadata=non_negative())
    online_segment: bool
    online_calibrate: str = field(metadata=_check(
        lambda v: set(parameter_names(v)) <= set(CALIBRATION_PARAMETERS),
        "a comma-separated list of " + ", ".join(CALIBRATION_PARAMETERS) + " (or empty)"))
    online_motion: bool

    @property
    def online_calibration(self) -> tuple[str, ...]:
        """The geometry parameters each online tomogram is calibrated for (none: no calibrated volume)."""
        return parameter_names(self.online_calibrate)


@dataclass(frozen=True)
class AnalysisConfig:
    model_path: str
    device: str = field(metadata=one_of("auto", "cpu", "cuda"))
    tile_pixels: int = field(metadata=_check(lambda v: v >= 16, ">= 16"))
    tile_overlap_pixels: int = field(metadata=non_negative())
    island_min_voxels: int = field(metadata=non_negative())
    closing_radius_voxels: int = field(metadata=non_negative())
    lacuna_min_volume_um3: float = field(metadata=non_negative())
    lacuna_min_thickness_um: float = field(metadata=non_negative())
    thickness_step_voxels: float = field(metadata=_check(lambda v: 0 < v <= 1, "above 0 and at most 1"))
    remodeling_min_cluster_voxels: int = field(metadata=non_negative())
    train_batch_size: int = field(metadata=_check(lambda v: v >= 1, ">= 1"))
    train_max_epochs: int = field(metadata=_check(lambda v: v >= 1, ">= 1"))
    train_patience_epochs: int = field(metadata=_check(lambda v: v >= 1, ">= 1"))
    train_min_improvement: float = field(metadata=fraction())
    train_validation_fraction: float = field(metadata=_check(lambda v: 0 < v < 1, "strictly between 0 and 1"))
    train_patch_pixels: int = field(metadata=_check(lambda v: v >= 16 and v % 8 == 0, ">= 16 and a multiple of 8"))
    train_patch_stride_pixels: int = field(metadata=_check(lambda v: v >= 1, ">= 1"))
    train_learning_rate: float = field(metadata=positive())
    train_loss: str = field(metadata=one_of("cross_entropy", "cross_entropy+dice"))
    base_channels: int = field(metadata=_check(lambda v: v >= 2, ">= 2"))
    sequence_slices: int = field(metadata=_check(lambda v: v >= 1 and v % 2 == 1, "an odd number >= 1"))
    threads: int = field(metadata=non_negative())

    def validate(self, key: str) -> None:
        if self.tile_overlap_pixels >= self.tile_pixels:
            raise ConfigError(f"{key}.tile_overlap_pixels must be below {key}.tile_pixels")


# ---- the simulator: physics of the specimen, the source, the optics and the camera ------------


@dataclass(frozen=True)
class SimSourceConfig:
    """How the simulated source behaves (ramps, warm-up, shutter) and what it emits."""

    kv_ramp_per_s: float = field(metadata=positive())
    power_ramp_w_per_s: float = field(metadata=positive())
    warmup_s: float = field(metadata=non_negative())
    shutter_move_s: float = field(metadata=non_negative())
    source_window_be_um: float = field(metadata=non_negative())
    filter_al_um: float = field(metadata=non_negative())
    kalpha_photons_per_s_sr_w: float = field(metadata=positive())
    kalpha_reference_kv: float = field(metadata=positive())


@dataclass(frozen=True)
class OpticsConfig:
    """The simulated TXM's zone plate, condenser and Zernike phase ring."""

    zone_plate_outermost_zone_nm: float = field(metadata=positive())
    condenser_solid_angle_msr: float = field(metadata=positive())
    txm_optics_efficiency: float = field(metadata=_check(lambda v: 0 < v <= 1, "above 0 and at most 1"))
    txm_air_path_mm: float = field(metadata=non_negative())
    phase_ring_radius_fraction: float = field(metadata=_check(lambda v: 0 < v < 1, "strictly between 0 and 1"))
    phase_ring_width_fraction: float = field(metadata=_check(lambda v: 0 < v < 1, "strictly between 0 and 1"))
    phase_ring_material: str = field(metadata=_check(lambda v: v != "", "a chemical formula such as 'Au'"))
    phase_ring_density_g_cm3: float = field(metadata=positive())
    phase_ring_shift_deg: float = field(metadata=_check(lambda v: 0 < v < 360, "between 0 and 360 (exclusive)"))
    condenser_illumination_points: int = field(metadata=_check(lambda v: 1 <= v <= 64, "between 1 and 64"))

    def validate(self, key: str) -> None:
        if self.phase_ring_radius_fraction + self.phase_ring_width_fraction / 2 >= 1:
            raise ConfigError(f"{key}.phase_ring_radius_fraction + width/2 must stay inside the pupil (< 1)")


@dataclass(frozen=True)
class SimCameraConfig:
    """The simulated sCMOS camera IOC: identity, sensor timing, memory, plugins, cooling."""

    manufacturer: str
    model: str
    serial_number: str
    firmware_version: str
    port_name: str = field(
        metadata=_check(lambda v: v != "" and " " not in v, "a non-empty asyn port name without spaces"))
    row_time_mono12_us: float = field(metadata=positive())
    row_time_mono16_us: float = field(metadata=positive())
    global_shutter_readout_factor: float = field(metadata=_check(lambda v: v >= 1, ">= 1"))
    acquire_time_s: float = field(metadata=positive())
    acquire_period_s: float = field(metadata=non_negative())
    start_latency_s: float = field(metadata=non_negative())
    buffer_mb: float = field(metadata=positive())
    writer_queue_frames: int = field(metadata=positive())
    render_workers: int = field(metadata=_check(lambda v: 1 <= v <= 64, "between 1 and 64"))
    capture_memory_mb: float = field(metadata=positive())
    preview_max_size: int = field(metadata=_check(lambda v: 16 <= v <= 2048, "between 16 and 2048"))
    preview_rate_hz: float = field(metadata=_check(lambda v: 0 < v <= 40,
                                                   "above 0 and at most 40 (the full-frame rate)"))
    temperature_setpoint_c: float
    ambient_temperature_c: float
    cooling_time_constant_s: float = field(metadata=positive())
    ground_truth_max_voxels: int = field(metadata=positive())


@dataclass(frozen=True)
class DetectorModelConfig:
    """The simulated detector's response and noise, and how finely frames are rendered."""

    bit_depth: int = field(metadata=_check(lambda v: v in (12, 16), "12 or 16"))
    electrons_per_count: float = field(metadata=positive())
    full_well_e: float = field(metadata=positive())
    read_noise_e: float = field(metadata=non_negative())
    dark_current_e_per_s: float = field(metadata=non_negative())
    offset_counts: float = field(metadata=non_negative())
    offset_fixed_pattern_counts: float = field(metadata=non_negative())
    flat_nonuniformity: float = field(metadata=_check(lambda v: 0 <= v < 0.5, "between 0 and 0.5"))
    pixel_response_nonuniformity: float = field(metadata=_check(lambda v: 0 <= v < 0.5, "between 0 and 0.5"))
    binning_mode: str = field(metadata=one_of("sum", "average"))
    scintillator_formula: str = field(metadata=_check(lambda v: v != "", "a chemical formula such as 'Lu3Al5O12'"))
    scintillator_density_g_cm3: float = field(metadata=positive())
    scintillator_um: float = field(metadata=positive())
    scintillator_photons_per_kev: float = field(metadata=positive())
    optics_collection_efficiency: float = field(metadata=_check(lambda v: 0 < v <= 1, "above 0 and at most 1"))
    sensor_qe: float = field(metadata=_check(lambda v: 0 < v <= 1, "above 0 and at most 1"))
    psf_fwhm_um: float = field(metadata=non_negative())
    render_tolerance_px: float = field(metadata=_check(lambda v: 0 < v <= 1, "above 0 and at most 1"))
    render_cache_mb: float = field(metadata=positive())
    breathing_tolerance_px: float = field(metadata=_check(lambda v: 0 < v <= 5, "above 0 and at most 5"))
    projection_supersampling: int = field(metadata=_check(lambda v: 1 <= v <= 4, "between 1 and 4"))


@dataclass(frozen=True)
class PhysiologyModelConfig:
    """The anaesthetised mouse: breathing, heart rate, temperature, and the monitor IOC's update rate."""

    respiration_rate_bpm: float = field(metadata=positive())
    respiration_drift_bpm: float = field(metadata=non_negative())
    respiration_drift_time_s: float = field(metadata=positive())
    respiration_variability: float = field(metadata=fraction())
    gate_fraction: float = field(metadata=_check(lambda v: 0 < v < 1, "strictly between 0 and 1"))
    respiration_amplitude_mm: float = field(metadata=non_negative())
    breath_active_s: float = field(metadata=positive())
    inspiration_share: float = field(metadata=_check(lambda v: 0 < v < 1, "strictly between 0 and 1"))
    heart_rate_bpm: float = field(metadata=positive())
    heart_rate_drift_bpm: float = field(metadata=non_negative())
    body_temperature_c: float
    temperature_drift_c: float = field(metadata=non_negative())
    vitals_drift_time_s: float = field(metadata=positive())
    waveform_rate_hz: float = field(metadata=_check(lambda v: 1 <= v <= 200, "between 1 and 200"))
    history_s: float = field(metadata=positive())


@dataclass(frozen=True)
class SpecimenConfig:
    """The mechanics of the bone mounted in the loading stage, and the load cell's noise."""

    stiffness_n_per_mm: float = field(metadata=positive())
    yield_force_n: float = field(metadata=positive())
    post_yield_stiffness_fraction: float = field(metadata=fraction())
    failure_force_n: float = field(metadata=positive())
    relaxation_fraction: float = field(metadata=fraction())
    relaxation_time_s: float = field(metadata=positive())
    force_noise_n: float = field(metadata=non_negative())

    def validate(self, key: str) -> None:
        if self.yield_force_n >= self.failure_force_n:
            raise ConfigError(f"{key}.yield_force_n must be below {key}.failure_force_n")


PHANTOM_RANGES = (
    ("trabecula_radius_min_um", "trabecula_radius_max_um"), ("trabecula_length_min_um", "trabecula_length_max_um"),
    ("lacuna_long_semi_axis_min_um", "lacuna_long_semi_axis_max_um"),
    ("lacuna_mid_semi_axis_min_um", "lacuna_mid_semi_axis_max_um"),
    ("lacuna_short_semi_axis_min_um", "lacuna_short_semi_axis_max_um"),
    ("haversian_diameter_min_um", "haversian_diameter_max_um"), ("haversian_length_min_mm", "haversian_length_max_mm"),
    ("transcortical_diameter_min_um", "transcortical_diameter_max_um"), ("pit_depth_min_um", "pit_depth_max_um"),
    ("pit_width_min_um", "pit_width_max_um"),
)
"""(min, max) key pairs of the phantom whose ranges must not be empty."""


@dataclass(frozen=True)
class PhantomConfig:
    periosteal_semi_axis_x_mm: float = field(metadata=positive())
    periosteal_semi_axis_y_mm: float = field(metadata=positive())
    endosteal_semi_axis_x_mm: float = field(metadata=positive())
    endosteal_semi_axis_y_mm: float = field(metadata=positive())
    bone_centre_x_mm: float
    bone_centre_y_mm: float
    bone_length_mm: float = field(metadata=positive())
    soft_tissue_semi_axis_x_mm: float = field(metadata=positive())
    soft_tissue_semi_axis_y_mm: float = field(metadata=positive())
    soft_tissue_centre_x_mm: float
    soft_tissue_centre_y_mm: float
    soft_tissue_length_mm: float = field(metadata=positive())
    trabecula_count: int = field(metadata=non_negative())
    trabecula_radius_min_um: float = field(metadata=positive())
    trabecula_radius_max_um: float = field(metadata=positive())
    trabecula_length_min_um: float = field(metadata=positive())
    trabecula_length_max_um: float = field(metadata=positive())
    trabecular_zone_start_mm: float
    trabecular_zone_end_mm: float
    lacuna_density_per_mm3: float = field(metadata=positive())
    lacuna_long_semi_axis_min_um: float = field(metadata=positive())
    lacuna_long_semi_axis_max_um: float = field(metadata=positive())
    lacuna_mid_semi_axis_min_um: float = field(metadata=positive())
    lacuna_mid_semi_axis_max_um: float = field(metadata=positive())
    lacuna_short_semi_axis_min_um: float = field(metadata=positive())
    lacuna_short_semi_axis_max_um: float = field(metadata=positive())
    lacuna_tilt_max_deg: float = field(metadata=_check(lambda v: 0 <= v <= 90, "between 0 and 90"))
    canaliculi_per_lacuna: int = field(metadata=_check(lambda v: 0 <= v <= 32, "between 0 and 32"))
    canaliculus_diameter_um: float = field(metadata=positive())
    canaliculus_length_um: float = field(metadata=positive())
    haversian_canal_count: int = field(metadata=non_negative())
    haversian_diameter_min_um: float = field(metadata=positive())
    haversian_diameter_max_um: float = field(metadata=positive())
    haversian_length_min_mm: float = field(metadata=positive())
    haversian_length_max_mm: float = field(metadata=positive())
    transcortical_canal_count: int = field(metadata=non_negative())
    transcortical_diameter_min_um: float = field(metadata=positive())
    transcortical_diameter_max_um: float = field(metadata=positive())
    periosteal_mar_um_per_day: float = field(metadata=non_negative())
    endosteal_mar_um_per_day: float = field(metadata=non_negative())
    pits_per_day: float = field(metadata=non_negative())
    endosteal_pit_fraction: float = field(metadata=fraction())
    pit_depth_min_um: float = field(metadata=positive())
    pit_depth_max_um: float = field(metadata=positive())
    pit_width_min_um: float = field(metadata=positive())
    pit_width_max_um: float = field(metadata=positive())
    max_study_day: float = field(metadata=positive())
    bone_modulus_gpa: float = field(metadata=positive())
    poisson_ratio: float = field(metadata=_check(lambda v: 0 <= v < 0.5, "between 0 and 0.5 (exclusive)"))
    respiration_direction_x: float
    respiration_direction_y: float
    respiration_direction_z: float
    ground_truth_supersampling: int = field(metadata=_check(lambda v: 1 <= v <= 4, "between 1 and 4"))

    def validate(self, key: str) -> None:
        values = dataclasses.asdict(self)
        for low, high in PHANTOM_RANGES:
            if values[low] > values[high]:
                raise ConfigError(f"{key}.{low} must not exceed {key}.{high}")
        if not (self.lacuna_short_semi_axis_max_um <= self.lacuna_mid_semi_axis_min_um
                and self.lacuna_mid_semi_axis_max_um <= self.lacuna_long_semi_axis_min_um):
            raise ConfigError(f"{key}: lacuna semi-axis ranges must be ordered short <= mid <= long")
        if (self.endosteal_semi_axis_x_mm >= self.periosteal_semi_axis_x_mm
                or self.endosteal_semi_axis_y_mm >= self.periosteal_semi_axis_y_mm):
            raise ConfigError(f"{key}: the endosteal (marrow) ellipse must lie inside the periosteal ellipse")
        if self.trabecular_zone_start_mm >= self.trabecular_zone_end_mm:
            raise ConfigError(f"{key}.trabecular_zone_start_mm must be below {key}.trabecular_zone_end_mm")
        if self.bone_length_mm >= self.soft_tissue_length_mm:
            raise ConfigError(f"{key}.bone_length_mm must be shorter than {key}.soft_tissue_length_mm")
        if (self.respiration_direction_x, self.respiration_direction_y, self.respiration_direction_z) == (0, 0, 0):
            raise ConfigError(f"{key}.respiration_direction_x/y/z must not all be 0")


@dataclass(frozen=True)
class SimConfig:
    """Everything only the simulator reads: ``[sim]`` and its ``[sim.*]`` tables."""

    time_scale: float = field(metadata=positive())
    seed: int = field(metadata=non_negative())
    source: SimSourceConfig
    optics: OpticsConfig
    camera: SimCameraConfig
    detector: DetectorModelConfig
    phantom: PhantomConfig
    physiology: PhysiologyModelConfig
    specimen: SpecimenConfig


def _port() -> dict:
    return _check(lambda v: 1024 <= v <= 65535, "a port between 1024 and 65535")


@dataclass(frozen=True)
class CatalogConfig:
    """The Tiled catalog every run lands in: embedded SQLite, or the instrument server's Tiled."""

    uri: str
    directory: str
    api_key: str = field(metadata=_check(lambda v: len(v) >= 8 and v.isalnum(), "8 or more letters and digits"))
    batch_size: int = field(metadata=positive())

    def path(self, data_dir: Path) -> Path:
        """The catalog's directory (relative paths are under the data directory)."""
        directory = Path(self.directory).expanduser()
        return directory if directory.is_absolute() else data_dir / directory

    def key(self) -> str:
        """The API key: ``$TILED_API_KEY`` when set, else the configured single-user key."""
        return os.environ.get("TILED_API_KEY") or self.api_key


@dataclass(frozen=True)
class ServerConfig:
    """``nanoscope serve``: where each part listens and how long it may take to start."""

    host: str = field(metadata=_check(lambda v: v != "", "an address to bind (127.0.0.1: this machine only)"))
    redis_port: int = field(metadata=_port())
    control_port: int = field(metadata=_port())
    info_port: int = field(metadata=_port())
    documents_in_port: int = field(metadata=_port())
    documents_out_port: int = field(metadata=_port())
    tiled_port: int = field(metadata=_port())
    redis_name_prefix: str = field(metadata=_check(lambda v: v.isidentifier(), "a name of letters, digits and _"))
    start_timeout_s: float = field(metadata=positive())
    live_analysis: bool
    live_catch_up_hours: float = field(metadata=non_negative())

    def validate(self, key: str) -> None:
        ports = [self.redis_port, self.control_port, self.info_port, self.documents_in_port,
                 self.documents_out_port, self.tiled_port]
        if len(set(ports)) != len(ports):
            raise ConfigError(f"{key}: every *_port must differ (two parts cannot listen on one port)")

    @property
    def control_address(self) -> str:
        return f"tcp://{self.host}:{self.control_port}"

    @property
    def info_address(self) -> str:
        return f"tcp://{self.host}:{self.info_port}"

    @property
    def documents_address(self) -> str:
        """Where subscribers connect for the RunEngine's documents (the 0MQ proxy's out side)."""
        return f"tcp://{self.host}:{self.documents_out_port}"

    @property
    def tiled_uri(self) -> str:
        return f"http://{self.host}:{self.tiled_port}"


@dataclass(frozen=True)
class GuiConfig:
    """The operator console (``nanoscope gui``): how often it redraws and how much history it shows."""

    view_rate_hz: float = field(metadata=positive())
    display_max_size: int = field(metadata=_check(lambda v: v >= 64, "at least 64 (pixels)"))
    status_rate_hz: float = field(metadata=positive())
    trend_s: float = field(metadata=positive())
    saturation_counts: int = field(metadata=positive())
    recent_runs: int = field(metadata=positive())


@dataclass(frozen=True)
class Config:
    """The instrument's configuration (top-level tables) and the simulator's (``sim``)."""

    epics: EpicsConfig
    paths: PathsConfig
    geometry: GeometryConfig
    stages: StagesConfig
    source: SourceConfig
    loadcell: LoadCellConfig
    physiology: PhysiologyConfig
    camera: CameraConfig
    detector: DetectorConfig
    scan: ScanConfig
    dose: DoseConfig
    recon: ReconConfig
    analysis: AnalysisConfig
    study: StudyConfig
    catalog: CatalogConfig
    server: ServerConfig
    gui: GuiConfig
    sim: SimConfig

    def validate(self, key: str) -> None:
        """Rules that join the instrument's tables and the simulator's."""
        camera, sim_camera = self.camera, self.sim.camera
        if not camera.exposure_min_s <= sim_camera.acquire_time_s <= camera.exposure_max_s:
            raise ConfigError("sim.camera.acquire_time_s must lie between camera.exposure_min_s and "
                              "camera.exposure_max_s")

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with keys of the named sections replaced, validated like a file."""
        merged = _merge(dataclasses.asdict(self), dict(sections))
        return _build(Config, merged, "")


MOVED_KEYS: dict[str, str] = {
    "sim.geometry": "geometry.kind",
    "sim.contrast": "geometry.contrast",
    "phantom": "sim.phantom",
    **{f"geometry.{key}": f"sim.optics.{key}" for key in (
        "zone_plate_outermost_zone_nm", "condenser_solid_angle_msr", "txm_optics_efficiency", "txm_air_path_mm",
        "phase_ring_radius_fraction", "phase_ring_width_fraction", "phase_ring_material",
        "phase_ring_density_g_cm3", "phase_ring_shift_deg", "condenser_illumination_points")},
    **{f"geometry.{key}": f"sim.source.{key}" for key in (
        "source_window_be_um", "filter_al_um", "kalpha_photons_per_s_sr_w", "kalpha_reference_kv")},
    **{f"source.{key}": f"sim.source.{key}" for key in (
        "kv_ramp_per_s", "power_ramp_w_per_s", "warmup_s", "shutter_move_s")},
    **{f"loadcell.{key}": f"sim.specimen.{key}" for key in (
        "stiffness_n_per_mm", "yield_force_n", "post_yield_stiffness_fraction", "failure_force_n",
        "relaxation_fraction", "relaxation_time_s", "force_noise_n")},
    **{f"physiology.{key}": f"sim.physiology.{key}" for key in (
        "respiration_rate_bpm", "respiration_drift_bpm", "respiration_drift_time_s", "respiration_variability",
        "gate_fraction", "respiration_amplitude_mm", "breath_active_s", "inspiration_share", "heart_rate_bpm",
        "heart_rate_drift_bpm", "body_temperature_c", "temperature_drift_c", "vitals_drift_time_s",
        "waveform_rate_hz", "history_s")},
    **{f"camera.{key}": f"sim.camera.{key}" for key in (
        "manufacturer", "model", "serial_number", "firmware_version", "port_name", "row_time_mono12_us",
        "row_time_mono16_us", "global_shutter_readout_factor", "acquire_time_s", "acquire_period_s",
        "start_latency_s", "buffer_mb", "writer_queue_frames", "render_workers", "capture_memory_mb",
        "preview_max_size", "preview_rate_hz", "temperature_setpoint_c", "ambient_temperature_c",
        "cooling_time_constant_s", "ground_truth_max_voxels")},
    **{f"detector.{key}": f"sim.detector.{key}" for key in (
        "bit_depth", "electrons_per_count", "full_well_e", "read_noise_e", "dark_current_e_per_s", "offset_counts",
        "offset_fixed_pattern_counts", "flat_nonuniformity", "pixel_response_nonuniformity", "binning_mode",
        "scintillator_formula", "scintillator_density_g_cm3", "scintillator_um", "scintillator_photons_per_kev",
        "optics_collection_efficiency", "sensor_qe", "psf_fwhm_um", "render_tolerance_px", "render_cache_mb",
        "projection_supersampling")},
}
"""Keys of the layout before the instrument and simulator tables were split, and where each lives now."""


def _merge(base: dict, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check ``value`` against a field's type; ints are accepted where floats are."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table ([{key}]), not {value!r}")
        return _build(kind, value, key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{key} must be of type {kind.__name__}, not {type(value).__name__} ({value!r})")
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    dotted = (prefix + ".") if prefix else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = dotted + unknown[0]
        if key in MOVED_KEYS:
            raise ConfigError(f"configuration key {key} has moved to {MOVED_KEYS[key]}; rename it in your file")
        raise ConfigError(
            f"unknown configuration key {key}; valid keys here are: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, f in fields.items():
        key = dotted + name
        if name not in data:
            raise ConfigError(f"missing configuration key {key}")
        kind = hints[name]
        if isinstance(kind, types.UnionType):
            raise TypeError(f"{cls.__name__}.{name}: union types are not supported")
        value = _coerce(data[name], kind, key)
        check = f.metadata.get("check")
        if check and not check[0](value):
            raise ConfigError(f"{key} = {value!r} is invalid: it must be {check[1]}")
        values[name] = value
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def default_config_text() -> str:
    """The shipped default TOML, comments included."""
    return resources.files("nanoscope_daq").joinpath("default_config.toml").read_text()


def load_config(
    path: str | os.PathLike | None = None, *, environment: bool = True, **sections: Mapping[str, Any]
) -> Config:
    """Defaults, then the user file (``path``, or $NANOSCOPE_CONFIG if ``environment``), then ``sections``."""
    data = tomllib.loads(default_config_text())
    if path is None and environment:
        path = os.environ.get(CONFIG_ENV_VAR)
    if path:
        try:
            with open(path, "rb") as fh:
                user = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist; pass an existing TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
        data = _merge(data, user)
    data = _merge(data, sections)
    return _build(Config, data, "")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {value!r} to TOML")


def overrides_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of override tables (``{"phantom": {...}, "stages": {"rot": {...}}}``), for a --config file."""
    lines: list[str] = []

    def table(name: str, values: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, Mapping)}
        if scalars:
            lines.append(f"[{name}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in scalars.items())
            lines.append("")
        for key, value in values.items():
            if isinstance(value, Mapping):
                table(f"{name}.{key}", value)

    for name, values in sections.items():
        table(name, values)
    return "\n".join(lines)


@dataclass(frozen=True)
class StudyConfig:
    scheduler_host: str
    bone_filter_sigma_voxels: float = field(metadata=positive())
    allowed_failures: int = field(metadata=non_negative())
    min_quiescent_fraction: float = field(metadata=fraction())
    max_task_voxels: int = field(metadata=non_negative())
