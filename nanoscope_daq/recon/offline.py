"""Reconstruct an NXtomo file into a volume file: the offline path of ``nanoscope recon``.

Steps (each in its module): read the file (nxtomo_reader.py); check the angles (weights.py);
average darks and flat groups, normalise each projection by the flat interpolated to
its time, remove zingers, optional Paganin phase retrieval, -log (preprocess.py,
phase.py); optional ring removal (rings.py); the centre of rotation unless given
(cor.py); optionally the geometry's self-calibration and the specimen's motion
(self_calibration.py); FBP, FDK or the Fourier method in slabs of slices (algorithms.py,
incremental.py); write ``/volume`` with provenance (nanoscope_daq/volume_files.py).

Line integrals of the whole tomogram are held in memory up to ``recon.memory_limit_gb``
and in a temporary file beside the output beyond it.

``slices`` reconstructs a z range of the volume only (the study's chunks,
analysis/study/chunks.py), equal to those slices of the whole volume: on an aligned
parallel beam from its detector rows and ``ROW_HALO`` rows either side (the 3 x 3
medians of the preprocessing), otherwise from every row. ``find_axis`` gives the centre
of rotation the whole reconstruction would find, from the rows its search looks at.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ReconConfig
from ..volume_files import VolumeWriter
from .algorithms import FilterSpec, check_algorithm, reconstruct
from .cor import find_cor
from .errors import ReconInputError
from .geometry import ConeGeometry, Geometry, ParallelGeometry, VolumeGrid
from .incremental import IncrementalFBP
from .nxtomo_reader import DARK, FLAT, PROJECTION, NxTomoScan
from .phase import paganin_filter
from .preprocess import FlatField, build_flat_field, normalise, to_line_integrals
from .rings import remove_rings
from .self_calibration import self_calibrate
from .weights import check_angles, projection_weights

FRAMES_PER_READ = 32
SLAB_BYTES = 2**28
"""Largest slab of line integrals (or of the volume) reconstructed at once."""
ROW_HALO = 2
"""Detector rows read beyond a slab's own: the zinger median of a row looks one row further, the median that
repairs a dead pixel one more (preprocess.py), so the slab's rows come out as from the whole frame."""


@dataclass(frozen=True)
class PhaseRetrieval:
    """Paganin parameters: delta/beta of the material, energy (keV), effective propagation distance (mm)."""

    delta_beta: float
    energy_kev: float | None = None
    distance_mm: float | None = None


def _flat_field(scan: NxTomoScan, settings: ReconConfig, device: str, rows: slice) -> FlatField:
    flats = scan.indices(FLAT)
    return build_flat_field(scan.read(scan.indices(DARK), rows), scan.read(flats, rows), scan.flat_groups(),
                            scan.frame_times[flats], zinger_threshold=settings.zinger_threshold, device=device)


def _stack(shape: tuple[int, int, int], settings: ReconConfig, folder: Path) -> np.ndarray:
    """An array for the line integrals: in memory, or a temporary file when above the memory limit."""
    if np.prod(shape) * 4 <= settings.memory_limit_gb * 2**30:
        return np.empty(shape, dtype=np.float32)
    return np.lib.format.open_memmap(folder / "line_integrals.npy", mode="w+", dtype=np.float32, shape=shape)


def line_integrals(scan: NxTomoScan, geometry: Geometry, settings: ReconConfig, phase: PhaseRetrieval | None,
                   folder: Path, device: str, rows: slice = slice(None)) -> np.ndarray:
    """-log of the flat-field-corrected projections (angles, rows, cols), rings removed if asked.

    ``rows``: a slab of detector rows only (each row is preprocessed from its 3 x 3 neighbourhood: read
    ``ROW_HALO`` rows beyond the slab and crop them for the slab's rows to equal the whole frame's).
    """
    field = _flat_field(scan, settings, device, rows)
    frames = scan.indices(PROJECTION)
    stack = _stack((frames.size, *field.dark.shape), settings, folder)
    for start in range(0, frames.size, FRAMES_PER_READ):
        chunk = frames[start:start + FRAMES_PER_READ]
        transmission = normalise(scan.read(chunk, rows), field, scan.frame_times[chunk],
                                 zinger_threshold=settings.zinger_threshold)
        if phase is not None:
            energy = phase.energy_kev or scan.energy_kev
            distance = phase.distance_mm or scan.propagation_mm
            if energy is None or distance is None:
                raise ReconInputError("Paganin phase retrieval needs the energy and the propagation distance; the file "
                                      "gives none: pass --energy-kev and --distance-mm")
            transmission = paganin_filter(transmission, geometry.sample_pixel_mm, distance, energy, phase.delta_beta)
        stack[start:start + chunk.size] = to_line_integrals(transmission, settings.min_transmission).cpu().numpy()
    if settings.ring_filter_px:
        rows_per_slab = max(1, SLAB_BYTES // (frames.size * stack.shape[2] * 4))
        for r0 in range(0, stack.shape[1], rows_per_slab):
            slab = torch.from_numpy(np.ascontiguousarray(stack[:, r0:r0 + rows_per_slab])).to(device)
            stack[:, r0:r0 + rows_per_slab] = remove_rings(slab, settings.ring_filter_px).cpu().numpy()
    return stack


def _cor_rows(geometry: Geometry) -> slice:
    """The detector rows the axis search looks at: every row (cone beam), or the middle half (parallel beam)."""
    if isinstance(geometry, ConeGeometry) or geometry.rows < 4:
        return slice(0, geometry.rows)
    return slice(geometry.rows // 4, geometry.rows - geometry.rows // 4)


def _auto_cor(rows_stack: np.ndarray, geometry: Geometry, settings: ReconConfig, device: str) -> tuple[float, float]:
    """The axis column and its registration score, found in the line integrals of ``_cor_rows`` only: those rows
    as they are (cone beam), or summed into one sinogram (parallel beam: the summed object has the same axis and
    less noise; see cor.py)."""
    sample, sample_geometry = np.asarray(rows_stack), geometry
    if not (isinstance(geometry, ConeGeometry) or geometry.rows < 4):
        sample = np.concatenate([rows_stack[a0:a0 + FRAMES_PER_READ].sum(axis=1, keepdims=True)
                                 for a0 in range(0, rows_stack.shape[0], FRAMES_PER_READ)])
        sample_geometry = ParallelGeometry(geometry.angles_deg, 1, geometry.cols, geometry.pixel_mm)
    found = find_cor(sample, sample_geometry, search_px=settings.cor_search_px, step_px=settings.cor_step_px,
                     device=device)
    return found.cor, found.registration


def _read_rows(rows: slice, total: int) -> tuple[slice, slice]:
    """Detector rows to preprocess for ``rows`` (``ROW_HALO`` more each side, within the detector), and where
    ``rows`` lie among them."""
    start, stop = max(0, rows.start - ROW_HALO), min(total, rows.stop + ROW_HALO)
    return slice(start, stop), slice(rows.start - start, rows.stop - start)


def find_axis(nxs_path: str | Path, *, settings: ReconConfig, device: str = "cpu",
              pixel_um: float | None = None) -> tuple[float, float]:
    """The centre of rotation (detector column) and its registration score that ``reconstruct_file`` finds when
    not given one, from the line integrals of the rows the search looks at only (no phase retrieval)."""
    with NxTomoScan(nxs_path) as scan, tempfile.TemporaryDirectory(dir=Path(nxs_path).parent,
                                                                    prefix=".axis-") as folder:
        geometry = scan.geometry(pixel_um)
        read, inside = _read_rows(_cor_rows(geometry), geometry.rows)
        stack = line_integrals(scan, geometry, settings, None, Path(folder), device, read)
        return _auto_cor(stack[:, inside], geometry, settings, device)


def _write_parallel(stack: np.ndarray, geometry: ParallelGeometry, algorithm: str, spec: FilterSpec,
                    settings: ReconConfig, writer: VolumeWriter, device: str) -> None:
    """Slabs of rows (parallel-beam slices are independent), each reconstructed and written."""
    grid = geometry.default_volume()
    per_row = max(geometry.num_angles * geometry.cols, geometry.cols**2) * 4
    rows = max(1, SLAB_BYTES // per_row)
    weights = projection_weights(geometry, device)
    for r0 in range(0, geometry.rows, rows):
        count = min(rows, geometry.rows - r0)
        slab_geometry = ParallelGeometry(geometry.angles_deg, count, geometry.cols, geometry.pixel_mm, geometry.cor)
        volume = VolumeGrid((count, grid.shape[1], grid.shape[2]), grid.voxel_mm)
        data = torch.from_numpy(np.ascontiguousarray(stack[:, r0:r0 + count]))
        slab = reconstruct(data, slab_geometry, volume, algorithm=algorithm, filter=spec, weights=weights,
                           kernel_width=settings.fourier_kernel_width, device=device)
        writer.write(r0, slab)


def _write_posed_parallel(stack: np.ndarray, geometry: ParallelGeometry, spec: FilterSpec, writer: VolumeWriter,
                          shifts: torch.Tensor | None, device: str, z_range: tuple[int, int]) -> None:
    """Slabs of slices ``z_range``, each by FBP from every row: a tilted detector or a moving specimen couples the
    rows."""
    grid = geometry.default_volume()
    nz, ny, nx = grid.shape
    slices = max(1, SLAB_BYTES // (ny * nx * 4))
    data = torch.from_numpy(np.ascontiguousarray(stack))
    weights = projection_weights(geometry, device)
    first, stop = z_range
    for z0 in range(first, stop, slices):
        count = min(slices, stop - z0)
        centre_z = (z0 + count / 2 - nz / 2) * grid.voxel_mm
        volume = VolumeGrid((count, ny, nx), grid.voxel_mm, (0.0, 0.0, centre_z))
        writer.write(z0 - first, reconstruct(data, geometry, volume, algorithm="fbp", filter=spec, weights=weights,
                                     shifts_mm=shifts, device=device))


def _write_cone(stack: np.ndarray, geometry: ConeGeometry, spec: FilterSpec, writer: VolumeWriter,
                device: str, shifts: torch.Tensor | None, z_range: tuple[int, int]) -> None:
    """Slabs of slices ``z_range``, each the FDK sum over chunks of projections (incremental.py)."""
    grid = geometry.default_volume()
    nz, ny, nx = grid.shape
    slices = max(1, SLAB_BYTES // (ny * nx * 4))
    angles_per_chunk = max(1, SLAB_BYTES // (geometry.rows * geometry.cols * 4))
    weights = projection_weights(geometry, device)
    angles = geometry.angles_array
    first, stop = z_range
    for z0 in range(first, stop, slices):
        count = min(slices, stop - z0)
        centre_z = (z0 + count / 2 - nz / 2) * grid.voxel_mm
        fdk = IncrementalFBP(geometry, VolumeGrid((count, ny, nx), grid.voxel_mm, (0.0, 0.0, centre_z)),
                             filter=spec, device=device)
        for a0 in range(0, angles.size, angles_per_chunk):
            part = slice(a0, a0 + angles_per_chunk)
            fdk.add(torch.from_numpy(np.ascontiguousarray(stack[part])), angles[part], weights[part],
                    None if shifts is None else shifts[part])
        writer.write(z0 - first, fdk.volume())


def reconstruct_file(nxs_path: str | Path, out_path: str | Path, *, cor: float | None = None,
                     algorithm: str | None = None, filter: str | None = None, device: str = "cpu",
                     pixel_um: float | None = None, phase: PhaseRetrieval | None = None,
                     settings: ReconConfig, calibrate: tuple[str, ...] = (),
                     motion: str | None = None, slices: tuple[int, int] | None = None) -> Path:
    """Reconstruct the NXtomo file ``nxs_path`` into the volume file ``out_path``; returns ``out_path``.

    ``cor``: detector column of the rotation axis (default: found automatically);
    ``calibrate``: geometry parameters to estimate from the data (calibrate.PARAMETERS),
    starting from the file's geometry and that axis; ``motion``: estimate and undo the
    specimen's motion, ``"rigid"`` (a translation per projection) or ``"respiratory"`` (the
    breath, driven by the frames' recorded respiratory phase; self_calibration.py);
    ``algorithm``/``filter``: override ``settings`` (the configuration's
    [recon] section); ``pixel_um``: pixel at the sample when the file lacks it;
    ``slices``: (first, stop) z slices of the volume to write, no others (needs ``cor``;
    ``find_axis`` gives the one found automatically).
    """
    settings = dataclasses.replace(settings, algorithm=algorithm or settings.algorithm,
                                   filter=filter or settings.filter)
    out_path = Path(out_path)
    started = time.perf_counter()
    with ExitStack() as stack_of:
        scan = stack_of.enter_context(NxTomoScan(nxs_path))
        geometry = scan.geometry(pixel_um)
        chosen = check_algorithm(settings.algorithm, geometry)
        check_angles(geometry, settings.min_projections, settings.max_angle_gap_deg)
        spec = FilterSpec(settings.filter, settings.filter_cutoff, settings.pad_mode)
        nz = geometry.default_volume().shape[0]
        z_range = _checked_slices(slices, nz, cor, calibrate, motion)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(stack_of.enter_context(tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".recon-")))
        own_rows = slices is not None and isinstance(geometry, ParallelGeometry) and not geometry.is_tilted()
        read, inside = _read_rows(slice(*z_range), geometry.rows) if own_rows and phase is None else \
            (slice(0, geometry.rows), slice(*z_range) if own_rows else slice(0, geometry.rows))
        stack = line_integrals(scan, geometry, settings, phase, folder, device, read)
        registration = None
        if cor is None:
            cor, registration = _auto_cor(stack[:, _cor_rows(geometry)], geometry, settings, device)
            cor_method = "automatic: 0/180 registration refined by half-turn negativity (docs/recon.md)"
        else:
            cor_method = "given"
        geometry = geometry.with_cor(float(cor))
        calibration, shifts = None, None
        if calibrate or motion:
            respiration = scan.respiration() if motion == "respiratory" else None
            calibration = self_calibrate(np.asarray(stack), geometry, tuple(calibrate), motion, settings, device,
                                         respiration)
            geometry = calibration.geometry
            if "cor" in calibrate:
                cor_method += "; then calibrated by reprojection consistency (calibrate.py)"
            if "cor" in calibrate and "distance" in calibrate:
                cor_method += ", refined with the distance by the mid-plane's conjugate rays (conjugate_rays.py)"
            if calibration.shifts_mm is not None:
                shifts = torch.from_numpy(calibration.shifts_mm).float().to(device)
        grid = geometry.default_volume()
        shape = (z_range[1] - z_range[0], *grid.shape[1:])
        writer = stack_of.enter_context(VolumeWriter(out_path, shape, grid.voxel_size_um))
        if isinstance(geometry, ConeGeometry):
            _write_cone(stack, geometry, spec, writer, device, shifts, z_range)
        elif geometry.is_tilted() or shifts is not None:
            chosen = "fbp"  # the Fourier method needs an aligned detector and a still specimen
            _write_posed_parallel(stack, geometry, spec, writer, shifts, device, z_range)
        else:
            own = dataclasses.replace(geometry, rows=shape[0])
            _write_parallel(stack[:, inside], own, chosen, spec, settings, writer, device)
        writer.provenance({
            "input_file": str(Path(nxs_path).resolve()),
            "input_entry": scan.entry_name,
            "algorithm": chosen,
            "filter": spec.name, "filter_cutoff": spec.cutoff, "pad_mode": spec.pad_mode,
            "cor_column": float(geometry.cor_value()), "cor_method": cor_method,
            "self_calibration": calibration.record() if calibration else {},
            "cor_registration": float("nan") if registration is None else registration,
            "geometry": _geometry_record(geometry),
            "projections": int(geometry.num_angles),
            "flats": int(scan.indices(FLAT).size), "darks": int(scan.indices(DARK).size),
            "preprocessing": {"zinger_threshold": settings.zinger_threshold,
                              "min_transmission": settings.min_transmission,
                              "ring_filter_px": settings.ring_filter_px,
                              "paganin": dataclasses.asdict(phase) if phase else None,
                              "flat_interpolation": "linear in frame time between flat groups"},
            "device": str(device),
            "seconds": round(time.perf_counter() - started, 3),
            **({"slices": list(z_range)} if slices is not None else {}),
        }, geometry.angles_array)
    return out_path


def _checked_slices(slices: tuple[int, int] | None, nz: int, cor: float | None, calibrate: tuple[str, ...],
                    motion: str | None) -> tuple[int, int]:
    """``slices`` (or the whole volume) once checked against the volume's ``nz`` slices and the other options."""
    if slices is None:
        return 0, nz
    first, stop = slices
    if not 0 <= first < stop <= nz:
        raise ReconInputError(f"slices {first} .. {stop} are not a range within the volume's 0 .. {nz}")
    if cor is None or calibrate or motion:
        raise ReconInputError("a slab of slices needs the centre of rotation given (find_axis finds the whole "
                              "volume's) and no self-calibration, which looks at every slice")
    return first, stop


def _geometry_record(geometry: Geometry) -> dict:
    record = {"type": geometry.kind, "rows": geometry.rows, "cols": geometry.cols, "pixel_mm": geometry.pixel_mm,
              "cor": float(geometry.cor_value()), "tilt_deg": float(geometry.tilt_deg)}
    if isinstance(geometry, ConeGeometry):
        record.update(source_sample_mm=geometry.source_sample_mm, source_detector_mm=geometry.source_detector_mm,
                      detector_offset_px=[float(v) for v in geometry.detector_offset_px],
                      roll_deg=float(geometry.roll_deg))
    return record
