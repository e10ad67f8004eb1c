"""The simulated microscope's imaging physics, one frame at a time, for the camera IOC.

``render`` turns an :class:`Exposure` (the instrument at mid-exposure) into 16-bit counts:

1. dark (``xrays_on`` False): offset, dark current and read noise only;
2. flat (the stages put the specimen outside the field, see ``sample_in_field``): the
   open beam (times the phase ring's tau^2 in Zernike mode);
3. projection: the ideal transmission of the specimen at that angle, day, load and
   stage offset -- computed exactly (projector.py, contrast.py), binned from
   ``projection_supersampling``^2 rays per pixel, blurred by focal spot and detector --
   then shifted (and, in the cone beam, zoomed) by that frame's breathing displacement,
   then read out by the detector model (detector.py) with the photon flux of the source
   setting (spectrum.py: scales with power and exposure, and with kV).

Speed: the ideal transmission is what costs (0.5-3 s per view on one core, see
benchmarks/bench_imaging.py); it is cached (``render_cache_mb``, least recently used first) per binning,
study day, load, angle (modulo 360 degrees), stage offset and source setting, each snapped
to a quantum that moves no feature by more than ``render_tolerance_px``: a second frame at
the same state -- the same angle in the next turn of a time series -- reuses it. Breathing
changes every frame, so it is applied as a shift (and, cone beam, zoom) of the cached view,
which carries a margin for it: exact in the parallel beam; in the cone beam exact only for
the plane through the axis, so views are cached per step of breathing displacement
(``breathing_quantum_mm``) small enough that the shift of the nearest keeps every feature
within ``breathing_tolerance_px``. A displacement beyond the margin is imaged exactly,
uncached. Per frame that leaves the shift and the noise.

Geometry conventions: geometry.py. Ground truth: groundtruth.py.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import Config, ConfigError
from ...physics.contrast import TxmOptics, absorption, bin_samples, blur
from ...physics.geometry import ConeBeam, DetectorGrid, ParallelBeam, Pose, Rays, rotation_z
from ...physics.materials import property_table
from ...physics.phantom import Phantom
from ...physics.projector import specimen_line_integrals
from ...physics.remodeling import SpecimenAnatomy, specimen_anatomy
from ...physics.spectrum import DetectedBeam, detect, source_beam
from .detector import Detector, check_binning
from .exposure import Exposure
from .kernels import resample

STATE_CACHE_DAYS = 4
OPEN_BEAM_SETTINGS = 4
"""Open-beam photon maps kept (binning, kV, power x exposure): a scan uses one, an alignment a few."""
ZERNIKE_FFT_MARGIN_PX = 8


@dataclass(frozen=True)
class ViewState:
    """The snapped state a cached view is computed for (what the ground truth will also use)."""

    binning: int
    day: float
    force_n: float
    angle_deg: float
    offset_mm: tuple[float, float, float]
    kv: float
    spot_um: float


class ProjectionCache:
    """Thread-safe LRU of views, bounded in bytes; concurrent requests for one key compute it once."""

    def __init__(self, max_bytes: float) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._pending: dict[tuple, threading.Event] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        while True:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return self._entries[key]
                event = self._pending.get(key)
                if event is None:
                    self._pending[key] = event = threading.Event()
                    self.misses += 1
                    break
            event.wait()
        try:
            value = compute()
            with self._lock:
                self._entries[key] = value
                self._bytes += value.nbytes
                while self._bytes > self.max_bytes and len(self._entries) > 1:
                    _, old = self._entries.popitem(last=False)
                    self._bytes -= old.nbytes
            return value
        finally:
            with self._lock:
                self._pending.pop(key).set()


class Imager:
    """Renders camera frames of the simulated mouse tibia and writes their ground truth."""

    def __init__(self, config: Config) -> None:
        self.config = config
        geo = config.geometry
        if geo.kind == "cone":
            self.geometry: ConeBeam | ParallelBeam = ConeBeam(geo.source_sample_mm, geo.source_detector_mm)
        else:
            self.geometry = ParallelBeam(geo.objective_magnification)
        self.zernike = geo.contrast == "zernike"
        if self.zernike and self.geometry.kind != "parallel":
            raise ConfigError(
                "geometry.contrast = 'zernike' needs geometry.kind = 'parallel': the phase ring sits in the back focal "
                "plane of the TXM's objective, which the cone-beam projection microscope does not have"
            )
        self.detector = Detector(config.detector, config.sim.detector, config.sim.seed)
        ph = config.sim.phantom
        direction = np.array([ph.respiration_direction_x, ph.respiration_direction_y, ph.respiration_direction_z])
        self.respiration_direction = direction / np.linalg.norm(direction)
        envelope_reach = math.hypot(ph.soft_tissue_centre_x_mm, ph.soft_tissue_centre_y_mm) + max(
            ph.soft_tissue_semi_axis_x_mm, ph.soft_tissue_semi_axis_y_mm)
        self.specimen_radius_mm = envelope_reach
        if self.geometry.kind == "cone" and geo.source_sample_mm <= envelope_reach + 1.0:
            raise ConfigError(
                f"geometry.source_sample_mm ({geo.source_sample_mm}) leaves no room for the specimen, which reaches "
                f"{envelope_reach:.2f} mm from the rotation axis; increase it"
            )
        a, b = ph.soft_tissue_semi_axis_x_mm, ph.soft_tissue_semi_axis_y_mm
        h = ((a - b) / (a + b)) ** 2
        perimeter = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
        self.specimen_chord_mm = math.pi * (math.pi * a * b) / perimeter
        self._cache = ProjectionCache(config.sim.detector.render_cache_mb * 2**20)
        self._phantom: Phantom | None = None
        self._states: OrderedDict[float, SpecimenAnatomy] = OrderedDict()
        self._beams: dict[float, DetectedBeam] = {}
        self._flux: dict[tuple[int, float], np.ndarray] = {}
        self._open_photons: OrderedDict[tuple[int, float, float], np.ndarray] = OrderedDict()
        self._optics: TxmOptics | None = None
        self._lock = threading.Lock()
        self._phantom_lock = threading.Lock()
        self.last_kv = config.source.kv_max

    # -- the contract -------------------------------------------------------------
    def frame_shape(self, binning: int) -> tuple[int, int]:
        """(rows, cols) of a frame at this binning."""
        return self.detector.frame_shape(binning)

    def voxel_size_um(self, binning: int) -> float:
        """Pixel size at the sample (um): pixel * binning / magnification."""
        check_binning(self.config.detector, binning)
        return self.config.detector.pixel_um * binning / self.geometry.magnification

    def render(self, exposure: Exposure, rng: np.random.Generator) -> np.ndarray:
        """One frame (uint16 counts) of the instrument in the state ``exposure`` describes."""
        b = exposure.binning
        check_binning(self.config.detector, b)
        if not exposure.exposure_s >= 0:
            raise ValueError(f"exposure_s must be >= 0, got {exposure.exposure_s}")
        if not exposure.xrays_on or exposure.power_w <= 0:
            return self.detector.read(None, None, exposure.exposure_s, b, rng)
        photons_open = self._open_beam_photons(b, exposure.kv, exposure.power_w * exposure.exposure_s)
        return self.detector.read(photons_open, self._beam(exposure.kv), exposure.exposure_s, b, rng,
                                  self.transmission(exposure))

    def warm_up(self, exposure: Exposure) -> None:
        """Build what every frame in the settings of ``exposure`` reuses, without rendering its view.

        The open-beam photons, the detector's fixed-pattern maps at its binning (seconds of a
        core at full resolution) and the compiled read-out are made or loaded by reading out one
        flat, which is discarded: a scan's first frames then cost what its later ones do.
        """
        b = exposure.binning
        check_binning(self.config.detector, b)
        photons_open = self._open_beam_photons(b, exposure.kv, exposure.power_w * exposure.exposure_s)
        self.detector.read(photons_open, self._beam(exposure.kv), exposure.exposure_s, b, np.random.default_rng(0))

    def write_ground_truth(self, path: str | Path, day: float, binning: int) -> None:
        """ground_truth.h5 of the specimen on ``day`` at the voxel size of this binning (groundtruth.py)."""
        from .groundtruth import write_ground_truth

        view = self.snap_day(day, binning)
        write_ground_truth(Path(path), self, self.state(view), binning, day_requested=day)

    # -- what the camera IOC also asks --------------------------------------------
    def sample_in_field(self, sample_offset_mm: tuple[float, float, float]) -> bool:
        """Whether any part of the specimen (at any angle) can reach the detector at this stage offset."""
        det = self.config.detector
        sx, sy, sz = sample_offset_mm
        half_w = det.pixels_x * det.pixel_um * 1e-3 / 2
        half_h = det.pixels_y * det.pixel_um * 1e-3 / 2
        radius = self.specimen_radius_mm + self.config.sim.physiology.respiration_amplitude_mm
        half_len = self.config.sim.phantom.soft_tissue_length_mm / 2
        if isinstance(self.geometry, ConeBeam):
            distance = math.hypot(sx, self.geometry.sod + sz)
            if distance <= radius:
                return True
            centre = math.atan2(sx, self.geometry.sod + sz)
            spread = math.asin(radius / distance)
            lo = self.geometry.sdd * math.tan(max(centre - spread, -1.5))
            hi = self.geometry.sdd * math.tan(min(centre + spread, 1.5))
            seen = half_h * (self.geometry.sod + sz + radius) / self.geometry.sdd  # widest at the far side
            vertical = sy - half_len < seen and sy + half_len > -seen
            return bool(hi > -half_w and lo < half_w and vertical)
        m = self.geometry.magnification
        horizontal = sx - radius < half_w / m and sx + radius > -half_w / m
        vertical = sy - half_len < half_h / m and sy + half_len > -half_h / m
        return bool(horizontal and vertical)

    # -- state, snapping ----------------------------------------------------------
    @property
    def phantom(self) -> Phantom:
        with self._phantom_lock:
            if self._phantom is None:
                self._phantom = Phantom(self.config.sim.phantom, self.config.sim.seed)
            return self._phantom

    def state(self, view: ViewState) -> SpecimenAnatomy:
        """The specimen on the view's (snapped) day, cached for a few days."""
        with self._lock:
            if view.day in self._states:
                self._states.move_to_end(view.day)
                return self._states[view.day]
        state = specimen_anatomy(self.phantom, view.day)
        with self._lock:
            self._states[view.day] = state
            while len(self._states) > STATE_CACHE_DAYS:
                self._states.popitem(last=False)
        return state

    def sample_pitch_mm(self, binning: int) -> float:
        return self.voxel_size_um(binning) * 1e-3

    def _tolerance_mm(self, binning: int) -> float:
        return self.config.sim.detector.render_tolerance_px * self.sample_pitch_mm(binning)

    def snap_day(self, day: float, binning: int) -> ViewState:
        """The day imaged for ``day``: a dyadic fraction of a day small enough for the tolerance."""
        ph = self.config.sim.phantom
        rate = max(ph.periosteal_mar_um_per_day, ph.endosteal_mar_um_per_day, 1e-6) * 1e-3
        quantum = min(2.0 ** math.floor(math.log2(self._tolerance_mm(binning) / rate)), 1.0 / 8)
        if not 0 <= day <= ph.max_study_day:
            raise ValueError(f"study day {day} is outside 0 .. {ph.max_study_day}; raise sim.phantom.max_study_day")
        snapped = min(round(day / quantum) * quantum, ph.max_study_day)
        return ViewState(binning, snapped, 0.0, 0.0, (0.0, 0.0, 0.0), self.last_kv, 0.0)

    def snap(self, exposure: Exposure) -> ViewState:
        """The state a frame is imaged in: each quantity snapped so no feature moves > tolerance."""
        b = exposure.binning
        tol = self._tolerance_mm(b)
        ph = self.config.sim.phantom
        day = self.snap_day(exposure.day, b).day
        angle_q = math.degrees(tol / (self.specimen_radius_mm + self.config.sim.physiology.respiration_amplitude_mm))
        half_height = self.config.detector.pixels_y * self.sample_pitch_mm(1) / 2
        area0 = self.phantom.periosteum.area - self.phantom.endosteum.area
        force_q = tol / half_height * ph.bone_modulus_gpa * 1e3 * area0
        sx, sy, sz = exposure.sample_offset_mm
        if isinstance(self.geometry, ConeBeam):
            half_width_px = max(self.frame_shape(b)) / 2
            sz_q = self.config.sim.detector.render_tolerance_px * self.geometry.sod / half_width_px
            sz_snapped = round(sz / sz_q) * sz_q
            kv = round(exposure.kv, 1)
            spot = max(exposure.spot_um, exposure.power_w / self.config.source.power_per_um_spot_w)
            spot = round(spot * 2) / 2
        else:
            sz_snapped, kv, spot = 0.0, 0.0, 0.0
        return ViewState(
            binning=b, day=day, force_n=round(exposure.force_n / force_q) * force_q,
            angle_deg=round((exposure.angle_deg % 360.0) / angle_q) * angle_q % 360.0,
            offset_mm=(round(sx / tol) * tol, round(sy / tol) * tol, sz_snapped), kv=kv, spot_um=spot,
        )

    # -- the ideal image ------------------------------------------------------------
    def transmission(self, exposure: Exposure) -> np.ndarray | float:
        """Noise-free intensity per pixel relative to the beam without specimen (Zernike: tau^2 included)."""
        if not self.sample_in_field(exposure.sample_offset_mm):
            return self.open_beam
        view = self.snap(exposure)
        if self.geometry.kind == "cone":
            self.last_kv = exposure.kv
        margin = self.margin_px(view.binning)
        quantum = self.breathing_quantum_mm(view.binning)
        breath_bin = round(exposure.respiration_mm / quantum) if math.isfinite(quantum) else 0
        cached_mm = breath_bin * quantum if breath_bin else 0.0
        key = (view.binning, view.day, view.force_n, view.angle_deg, view.offset_mm, view.kv, view.spot_um, breath_bin)
        base = self._cache.get(
            key, lambda: self.ideal_view(view, margin, cached_mm * self.respiration_direction if breath_bin else None))
        shifted = self._breathe(base, margin, view, (exposure.respiration_mm - cached_mm) * self.respiration_direction)
        breathing = exposure.respiration_mm * self.respiration_direction
        if shifted is None:  # breathing beyond the cached margin: image it exactly
            shifted = self.ideal_view(view, margin, breathing)[margin:-margin or None, margin:-margin or None]
        return shifted

    @property
    def open_beam(self) -> float:
        """Relative intensity with the specimen out of the field: 1, or the phase ring's tau^2."""
        return self.optics.open_beam if self.geometry.kind == "parallel" else 1.0

    @property
    def optics(self) -> TxmOptics:
        if self._optics is None:
            self._optics = TxmOptics(self.config.sim.optics, self.energy_kev(0.0), self.zernike)
        return self._optics

    def energy_kev(self, kv: float) -> float:
        """Effective energy of the detected beam at this high voltage (TXM: the K-alpha line)."""
        return self._beam(kv).effective_energy_kev

    @property
    def views_rendered(self) -> int:
        """Views rendered exactly into the view cache so far (the cache's misses)."""
        return self._cache.misses

    def view_nbytes(self, binning: int) -> int:
        """Bytes of one cached view (float32, with its margin) at ``binning``."""
        margin = self.margin_px(binning)
        rows, cols = self.frame_shape(binning)
        return (rows + 2 * margin) * (cols + 2 * margin) * np.dtype(np.float32).itemsize

    def margin_px(self, binning: int) -> int:
        """Binned pixels kept around the frame in cached views, for breathing shifts and blur."""
        amplitude = 1.5 * self.config.sim.physiology.respiration_amplitude_mm
        pitch = self.sample_pitch_mm(binning)
        rows, cols = self.frame_shape(binning)
        zoom_px = amplitude / self.geometry.sod * max(rows, cols) / 2 if isinstance(self.geometry, ConeBeam) else 0.0
        margin = amplitude / pitch + zoom_px + 1.5 * self._blur_px(binning, self.config.source.spot_max_um) + 2
        if self.zernike:
            margin += ZERNIKE_FFT_MARGIN_PX
        return int(math.ceil(margin))

    def _blur_px(self, binning: int, spot_um: float) -> float:
        """FWHM (binned pixels at the detector) of focal spot and detector blur."""
        det = self.config.detector
        fwhm_um = self.config.sim.detector.psf_fwhm_um
        if isinstance(self.geometry, ConeBeam):
            fwhm_um = math.hypot(fwhm_um, spot_um * (self.geometry.magnification - 1))
        return fwhm_um / (det.pixel_um * binning)

    def grid(self, binning: int, margin: int) -> DetectorGrid:
        """The working grid of a view: the binned frame plus margin, ``projection_supersampling`` finer."""
        det = self.config.detector
        ss = self.config.sim.detector.projection_supersampling
        rows, cols = self.frame_shape(binning)
        pixel_mm = det.pixel_um * 1e-3 * binning
        if isinstance(self.geometry, ParallelBeam):
            pixel_mm /= self.geometry.magnification
        physical = det.pixel_um * 1e-3 / (1 if isinstance(self.geometry, ConeBeam) else self.geometry.magnification)
        x_offset = (cols * binning - det.pixels_x) / 2 * physical
        z_offset = (rows * binning - det.pixels_y) / 2 * physical
        return DetectorGrid((rows + 2 * margin) * ss, (cols + 2 * margin) * ss, pixel_mm / ss, x_offset, z_offset)

    def ideal_view(self, view: ViewState, margin: int, breathing_mm: np.ndarray | None = None) -> np.ndarray:
        """Ideal intensity (float32, binned pixels, with margin) of the specimen in ``view``."""
        state = self.state(view)
        ph = self.config.sim.phantom
        strain = view.force_n / (ph.bone_modulus_gpa * 1e3 * state.cortical_area_mm2)
        pose = Pose.of(view.angle_deg, view.offset_mm, breathing_mm, strain, ph.poisson_ratio)
        grid = self.grid(view.binning, margin)
        energy = self.energy_kev(view.kv)
        parallel = isinstance(self.geometry, ParallelBeam)
        properties = property_table(energy, with_phase=parallel)
        resolved = self.phantom.canaliculi_resolved(self.voxel_size_um(view.binning))
        lines = specimen_line_integrals(state, Rays(self.geometry, grid, pose), properties, resolved)
        if parallel:
            image = self.optics.image(lines[0], lines[1], grid.pitch_mm)
        else:
            image = absorption(lines[0])
        image = bin_samples(image, self.config.sim.detector.projection_supersampling)
        return blur(image, self._blur_px(view.binning, view.spot_um)).astype(np.float32)

    def breathing_quantum_mm(self, binning: int) -> float:
        """Steps of breathing displacement (mm) at which views are cached; in between, the nearest is shifted.

        Parallel beam: a rigid displacement of the specimen is exactly a shift of its projection
        (the part along the beam changes nothing), so every breath shifts the one view: inf.
        Cone beam: a shift (and zoom) of the view is exact only for the plane through the axis;
        a feature at depth y along the beam moves by a fraction y / (sod - y) more or less, and a
        displacement along the beam zooms it by y / sod^2 more or less. For a residual
        displacement r, at the specimen's reach R and a feature u pixels from the frame centre,
        the error is at most r (R / ((sod - R) * pitch) + u_max R / sod^2) pixels; the quantum
        keeps that at ``breathing_tolerance_px`` for r up to half a quantum.
        """
        if isinstance(self.geometry, ParallelBeam):
            return math.inf
        reach = self.specimen_radius_mm + self.config.sim.physiology.respiration_amplitude_mm
        sod = self.geometry.sod
        half_width_px = max(self.frame_shape(binning)) / 2
        per_mm = reach / ((sod - reach) * self.sample_pitch_mm(binning)) + half_width_px * reach / sod**2
        return 2 * self.config.sim.detector.breathing_tolerance_px / per_mm

    def _breathe(self, base: np.ndarray, margin: int, view: ViewState, breathing: np.ndarray) -> np.ndarray | None:
        """The cached view moved by the breathing displacement; None if it leaves the margin.

        Exact in the parallel beam; within ``breathing_tolerance_px`` in the cone beam, where the
        displacement is at most half a ``breathing_quantum_mm`` (see there).
        """
        rows, cols = self.frame_shape(view.binning)
        lab = rotation_z(view.angle_deg) @ breathing
        pitch = self.sample_pitch_mm(view.binning)
        if isinstance(self.geometry, ConeBeam):
            depth = self.geometry.sod + view.offset_mm[2]
            zoom = depth / (depth + lab[1])
        else:
            zoom = 1.0
        shift_c, shift_r = lab[0] * zoom / pitch, lab[2] * zoom / pitch
        return shift_zoom(base, margin, rows, cols, shift_r, shift_c, zoom)

    # -- photons --------------------------------------------------------------------
    def _beam(self, kv: float) -> DetectedBeam:
        """Absorbed photons per second per steradian per watt, cached per 0.1 kV."""
        key = round(kv, 1) if self.geometry.kind == "cone" else 0.0
        with self._lock:
            if key in self._beams:
                return self._beams[key]
        if isinstance(self.geometry, ConeBeam):
            beam = detect(self.config, source_beam(self.config, max(key, 1e-3), 1.0, lines_only=False),
                          self.geometry.sdd, self.specimen_chord_mm)
        else:
            kv_line = self.config.source.kv_max if key == 0.0 else key
            beam = detect(self.config, source_beam(self.config, kv_line, 1.0, lines_only=True),
                          self.config.sim.optics.txm_air_path_mm, self.specimen_chord_mm)
        with self._lock:
            self._beams[key] = beam
        return beam

    def _flux_map(self, binning: int, kv: float) -> np.ndarray:
        """Absorbed photons per second per watt in each binned pixel (gain map included)."""
        key = (binning, round(kv, 1))
        with self._lock:
            if key in self._flux:
                return self._flux[key]
        det = self.config.detector
        rows, cols = self.frame_shape(binning)
        if isinstance(self.geometry, ConeBeam):
            beam = self._beam(kv)
            grid = self.grid(binning, 0)
            pitch_mm = grid.pitch_mm * self.config.sim.detector.projection_supersampling
            grid = DetectorGrid(rows, cols, pitch_mm, grid.x_offset_mm, grid.z_offset_mm)
            x, z = grid.col_x(np.arange(cols)), grid.row_z(np.arange(rows))
            r = np.sqrt(self.geometry.sdd**2 + x[None, :] ** 2 + z[:, None] ** 2)
            area = (det.pixel_um * 1e-3 * binning) ** 2
            per_pixel = beam.quanta_per_s * area * self.geometry.sdd / r**3
        else:
            # TXM: the Kalpha line at the source's maximum high voltage scaled to this one
            ratio = self._kalpha_ratio(kv)
            optics = self.config.sim.optics
            collected = (self._beam(kv).quanta_per_s * optics.condenser_solid_angle_msr * 1e-3
                         * optics.txm_optics_efficiency)
            per_pixel = np.full((rows, cols), ratio * collected * binning**2 / (det.pixels_x * det.pixels_y))
        flux = (per_pixel * self.detector.gain_map(binning)).astype(np.float32)
        with self._lock:
            self._flux[key] = flux
        return flux

    def _open_beam_photons(self, binning: int, kv: float, watt_seconds: float) -> np.ndarray:
        """Photons each binned pixel absorbs in the open beam: the flux map times power and exposure.

        Kept for the last few settings: a scan's frames all share one, so no frame pays the product.
        """
        key = (binning, round(kv, 1), watt_seconds)
        with self._lock:
            if key in self._open_photons:
                self._open_photons.move_to_end(key)
                return self._open_photons[key]
        photons = self._flux_map(binning, kv) * np.float32(watt_seconds)
        with self._lock:
            self._open_photons[key] = photons
            while len(self._open_photons) > OPEN_BEAM_SETTINGS:
                self._open_photons.popitem(last=False)
        return photons

    def _kalpha_ratio(self, kv: float) -> float:
        """K-alpha output at ``kv`` relative to the source's maximum high voltage (TXM flux)."""
        if kv <= 0:
            return 0.0
        at = source_beam(self.config, kv, 1.0, lines_only=True).photons_per_s_sr.sum()
        ref = source_beam(self.config, self.config.source.kv_max, 1.0, lines_only=True).photons_per_s_sr.sum()
        return float(at / ref) if ref > 0 else 0.0


def shift_zoom(base: np.ndarray, margin: int, rows: int, cols: int, shift_r: float, shift_c: float,
               zoom: float) -> np.ndarray | None:
    """Sample ``base`` (frame + margin) so that content moves by (shift_r, shift_c) px and scales by
    ``zoom`` about the frame centre; None if that needs pixels beyond the margin.

    Bilinear, exact in the zoom: output pixel i reads source position
    (i + 0.5 - size/2 - shift) / zoom + size/2 + margin - 0.5 along each axis; one compiled pass.
    """
    row0, row_frac = _source_positions(rows, margin, shift_r, zoom, base.shape[0])
    col0, col_frac = _source_positions(cols, margin, shift_c, zoom, base.shape[1])
    if row0 is None or col0 is None:
        return None
    out = np.empty((rows, cols), np.float32)
    resample(np.ascontiguousarray(base, np.float32), row0, row_frac, col0, col_frac, out)
    return out


def _source_positions(size: int, margin: int, shift: float, zoom: float,
                      available: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Integer part (int64) and fraction (float32) of the source position of each output pixel along one axis;
    (None, ...) where a position needs a pixel beyond ``available``."""
    position = (np.arange(size) + 0.5 - size / 2 - shift) / zoom + size / 2 + margin - 0.5
    first = np.floor(position).astype(np.int64)
    if first.min() < 0 or first.max() + 1 >= available:
        return None, position
    return first, (position - first).astype(np.float32)
