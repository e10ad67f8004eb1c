"""The online reconstruction of one run: frames in, live slices and one volume per tomogram out.

It is fed, in document order, the frames each stream announced and the ``tomograms``
events (streaming.py turns documents into these calls, on a worker thread). Projections
are flat-field corrected with the latest darks and flats, binned, turned into line
integrals and added to a running volume (IncrementalFBP) whose slots hold the latest
frame of each planned angle (online_window.py). When a tomogram is announced its
volume is made exactly from its own frames, written beside the camera file with its
provenance, and published in the analysis run; with retrospective gating also one
volume per respiratory-phase bin and one from the frames taken with the gate open; with
``recon.online_calibrate`` or ``online_motion`` also one whose geometry (and the
specimen's motion) was estimated from the tomogram's own projections (selection
``calibrated``, recon/self_calibration.py), the estimates in a ``calibration`` event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..documents import DocumentContractError, ImageKey
from ..recon import FilterSpec, IncrementalFBP, normalise, reconstruct, to_line_integrals
from ..recon.algorithms import direct_algorithm
from ..recon.self_calibration import self_calibrate
from ..recon.weights import projection_weights
from ..volume_files import VolumeWriter
from .analysis_run import AnalysisRun
from .announcements import CameraFile
from .frame_ranges import FrameRange, FrameSet
from .frame_reader import CameraReader, FrameBlock
from .online_flats import FlatFieldsByIndex
from .online_geometry import OnlineSetup
from .online_window import FrameRef, SlotWindow
from .tomogram import Tomogram

logger = logging.getLogger(__name__)

ANALYSIS = "online_reconstruction"


def recon_path(camera_file: Path, tomogram: int, selection: str = "") -> Path:
    """Where the online volume of ``tomogram`` goes: beside its camera file."""
    suffix = f"_{selection}" if selection else ""
    return camera_file.with_name(f"{camera_file.stem}_{tomogram:03d}{suffix}_recon.h5")


def mid_slices(volume: torch.Tensor) -> dict[str, np.ndarray]:
    """The three orthogonal slices through the volume's centre (z-y-x): xy, xz and yz."""
    nz, ny, nx = volume.shape
    return {"xy": volume[nz // 2].contiguous().cpu().numpy(), "xz": volume[:, ny // 2].contiguous().cpu().numpy(),
            "yz": volume[:, :, nx // 2].contiguous().cpu().numpy()}


@dataclass(frozen=True)
class Selection:
    """Projections of a tomogram reconstructed on their own: a phase bin or the open gate."""

    name: str
    frames: np.ndarray
    """Boolean mask over the tomogram's projections."""
    gate_open_fraction: float


def gating_selections(phase: np.ndarray, gate: np.ndarray, bins: int) -> list[Selection]:
    """One selection per respiratory-phase bin [k/bins, (k+1)/bins) (none when ``bins`` is 0), and the frames taken
    with the gate open."""
    open_gate = gate > 0.5
    if bins == 0:
        return [Selection("gate", open_gate, 1.0)]
    which = np.clip(np.floor(np.mod(phase, 1.0) * bins), 0, bins - 1)
    selections = [Selection(f"phase{k}of{bins}", which == k, float(open_gate[which == k].mean())
                            if np.any(which == k) else 0.0) for k in range(bins)]
    return selections + [Selection("gate", open_gate, 1.0)]


class OnlineReconstruction:
    """The online reconstruction of one run, publishing into ``analysis``."""

    def __init__(self, setup: OnlineSetup, config: Config, analysis: AnalysisRun, raw_start: Mapping[str, Any],
                 on_written: Callable[[Path], None]) -> None:
        self.setup = setup
        self.config = config
        self.settings = config.recon
        self.analysis = analysis
        self.raw_start = raw_start
        self.device = self.settings.online_device
        self.fbp = IncrementalFBP(setup.geometry, filter=FilterSpec(self.settings.filter, self.settings.filter_cutoff,
                                                                    self.settings.pad_mode),
                                  algorithm=setup.algorithm, kernel_width=self.settings.fourier_kernel_width,
                                  device=self.device)
        self.plan_weights = projection_weights(setup.geometry, self.device)
        self.flats = FlatFieldsByIndex(self.settings.zinger_threshold, self.device)
        self.window = SlotWindow()
        self.readers: dict[Path, CameraReader] = {}
        self.waiting: list[tuple[CameraFile, FrameRange]] = []
        """Projections announced before any flats: reconstructed once flats arrive."""
        self.last_frames_at = float("nan")
        self.received = FrameSet()
        """Projection frames reconstructed (valid or not)."""
        self.snapshots: list[tuple[int, torch.Tensor]] = []
        """(first frame of the next span, volume of the frames before it), kept until their tomogram is published:
        a series announces its tomograms at its end, and undoing whole turns would cost a full reconstruction."""
        self._span_slots: set[int] = set()
        self._lines: dict[int, torch.Tensor] = {}
        """Line integrals of the frame in each slot: what a replacing frame takes out (one tomogram's worth)."""
        self.pending: list[tuple[Tomogram, CameraFile]] = []
        """Tomograms announced before all their projections were: published once they are."""
        self.on_written = on_written
        self._slices_at = -np.inf
        self._tomograms = 0

    # -- frames ---------------------------------------------------------------------------------------------------
    def reader(self, camera: CameraFile) -> CameraReader:
        if camera.path not in self.readers:
            self.readers[camera.path] = CameraReader(camera, self.setup.binning)
        return self.readers[camera.path]

    def calibration(self, stream: str, camera: CameraFile, frames: FrameRange, arrived: float) -> None:
        """Darks or flats announced; projections that waited for flats are added."""
        block = self.reader(camera).read(frames.indices())
        beam_on = block.value("source_current", 0.0) > 0
        keep = ~beam_on if stream == "darks" else beam_on  # a dark with beam or a flat without is no calibration
        self.flats.add(stream, frames, block.pixels[keep])
        if not self.flats.empty and self.waiting:
            waiting, self.waiting = self.waiting, []
            for camera_file, waited in waiting:
                self.projections(camera_file, waited, arrived)

    def projections(self, camera: CameraFile, frames: FrameRange, arrived: float) -> None:
        """Projections announced: add the valid ones, take out the frames they replace, publish live slices."""
        self.last_frames_at = arrived
        if self.flats.empty:
            self.waiting.append((camera, frames))
            return
        block = self.reader(camera).read(frames.indices())
        frame_type = block.value("frame_type")
        projection = ~np.isfinite(frame_type) | (frame_type == ImageKey.PROJECTION)
        valid = (block.value("source_current", 0.0) > 0) & projection
        angles = block.value("rotation_angle")  # mid-exposure, as in the NXtomo files
        encoder = block.value("encoder_angle")  # latched at the trigger: names the grid angle, as image_keys.py does
        slots = self.setup.slot(np.where(np.isfinite(encoder), encoder, angles))
        refs = [FrameRef(int(block.indices[i]), float(angles[i]), int(slots[i]), self.flats.for_frame(block.indices[i]))
                for i in np.flatnonzero(valid & (slots >= 0))]
        for part, new_span in self._spans(refs):
            self._add(camera, part, block, new_span)
        self.received.add(frames)
        self._live_slices()
        self._publish_ready()

    def _spans(self, refs: list[FrameRef]) -> list[tuple[list[FrameRef], bool]]:
        """``refs`` cut where a slot filled since the last cut is imaged again (a new turn or sweep begins); each
        part says whether it begins at such a cut."""
        parts: list[tuple[list[FrameRef], bool]] = [([], False)]
        for ref in refs:
            if ref.slot in self._span_slots:
                parts.append(([], True))
                self._span_slots.clear()
            self._span_slots.add(ref.slot)
            parts[-1][0].append(ref)
        return [part for part in parts if part[0]]

    def _add(self, camera: CameraFile, refs: list[FrameRef], block: FrameBlock, new_span: bool) -> None:
        """Put ``refs`` (no slot twice) in the window in one transform; at a new span, first keep the volume of the
        span it ends."""
        if new_span:
            self.snapshots.append((refs[0].index, self.fbp.volume()))
        replaced = [old for ref in refs if (old := self.window.place(ref)) is not None]
        lines = self._line_integrals(camera, refs, block)
        old_lines = torch.stack([self._lines[old.slot] for old in replaced]) if replaced else lines[:0]
        self.fbp.update(lines, self._angles(refs), self._weights(refs), old_lines, self._angles(replaced),
                        self._weights(replaced))
        for ref, line in zip(refs, lines):
            self._lines[ref.slot] = line
        self.fbp.projections = len(self.window)

    @staticmethod
    def _angles(refs: list[FrameRef]) -> np.ndarray:
        return np.array([ref.angle_deg for ref in refs])

    def _weights(self, refs: list[FrameRef]) -> torch.Tensor:
        return self.plan_weights[torch.as_tensor([ref.slot for ref in refs], dtype=torch.long)]

    def _line_integrals(self, camera: CameraFile, refs: list[FrameRef], block: FrameBlock | None) -> torch.Tensor:
        """-log transmission of ``refs`` (taken from ``block`` when it holds them, else read again)."""
        if not refs:
            g = self.setup.geometry
            return torch.zeros((0, g.rows, g.cols), device=self.device)
        indices = np.array([ref.index for ref in refs])
        if block is not None and np.isin(indices, block.indices).all():
            pixels = block.pixels[np.searchsorted(block.indices, indices)]
        else:
            pixels = self.reader(camera).read(indices).pixels
        out = []
        for flats_start in sorted({ref.field for ref in refs}):
            mine = np.array([ref.field == flats_start for ref in refs])
            transmission = normalise(pixels[mine], self.flats.get(flats_start),
                                     zinger_threshold=self.settings.zinger_threshold)
            out.append((np.flatnonzero(mine), to_line_integrals(transmission, self.settings.min_transmission)))
        result = torch.empty((len(refs), *out[0][1].shape[1:]), device=self.device)
        for rows, values in out:
            result[torch.as_tensor(rows)] = values
        return result

    def _difference(self, camera: CameraFile, added: list[FrameRef], removed: list[FrameRef]) -> torch.Tensor:
        """Contribution of ``added`` minus that of ``removed``, both read again from the camera file."""
        return self.fbp.difference(self._line_integrals(camera, added, None), self._angles(added), self._weights(added),
                                   self._line_integrals(camera, removed, None), self._angles(removed),
                                   self._weights(removed))

    def _live_slices(self) -> None:
        now = time.monotonic()
        if now - self._slices_at < self.settings.online_slices_interval_s:
            return
        self._slices_at = now
        self.analysis.event("live_slices", {**mid_slices(self.fbp.running()), "projections": len(self.window),
                                            "tomogram": self._tomograms})

    # -- tomograms ------------------------------------------------------------------------------------------------
    def tomogram(self, tomogram: Tomogram, camera: CameraFile) -> None:
        """A tomogram is announced: published as soon as all its projections have been reconstructed.

        A continuous series announces a tomogram when its rotation ends, which can be
        before the camera file holds (and the run has announced) its last frames.
        """
        self.pending.append((tomogram, camera))
        self._publish_ready()

    def finish(self) -> list[int]:
        """The run stopped: publish the tomograms still waiting, with the frames received; returns their indices."""
        left = [tomogram.index for tomogram, _ in self.pending]
        for tomogram, camera in self.pending:
            self._publish_tomogram(tomogram, camera)
        self.pending.clear()
        return left

    @staticmethod
    def _projection_range(tomogram: Tomogram) -> FrameRange:
        projections = [frames for key, frames in tomogram.parts if key == ImageKey.PROJECTION]
        return FrameRange(min(f.start for f in projections), max(f.stop for f in projections))

    def _publish_ready(self) -> None:
        while self.pending and self.received.covers(self._projection_range(self.pending[0][0])):
            self._publish_tomogram(*self.pending.pop(0))

    def _publish_tomogram(self, tomogram: Tomogram, camera: CameraFile) -> None:
        """The volume of exactly the tomogram's own frames, written and published."""
        start, stop = (frames := self._projection_range(tomogram)).start, frames.stop
        own = self.window.latest_within(start, stop)
        if not own:
            raise DocumentContractError(f"tomogram {tomogram.index} has no valid projection the online "
                                        f"reconstruction received (frames {start}-{stop} of {camera.path})")
        volume, held = self._nearest_volume(stop)
        added = [ref for slot, ref in own.items() if held.get(slot) != ref]
        removed = [ref for slot, ref in held.items() if own.get(slot) != ref]
        if added or removed:
            volume += self._difference(camera, added, removed)
        refs = sorted(own.values(), key=lambda ref: ref.index)
        latency = time.monotonic() - self.last_frames_at
        self._publish(tomogram, camera, "", volume, refs, latency, float("nan"))
        if self.setup.gating == "retrospective":
            self._gated(tomogram, camera, refs)
        if self.settings.online_calibration or self.settings.online_motion:
            self._self_calibrated(tomogram, camera, refs)
        self._tomograms = tomogram.index + 1
        self.window.forget_before(stop)
        self.snapshots = [(end, kept) for end, kept in self.snapshots if end > stop]

    def _nearest_volume(self, stop: int) -> tuple[torch.Tensor, dict[int, FrameRef]]:
        """The kept volume (a span's end, or the running one) whose frames end nearest ``stop``, and those frames."""
        candidates = [(end, volume) for end, volume in self.snapshots if end >= stop]
        if candidates:
            end, volume = min(candidates, key=lambda pair: pair[0])
            return volume.clone(), self.window.latest_within(0, end)
        return self.fbp.volume(), self.window.current()

    def _tomogram_frames(self, camera: CameraFile, refs: list[FrameRef]) -> tuple[FrameBlock, torch.Tensor]:
        """The tomogram's frames read again (pixels and per-frame values) and their line integrals."""
        values = self.reader(camera).read(np.array([ref.index for ref in refs]))
        return values, self._line_integrals(camera, refs, values)

    def _self_calibrated(self, tomogram: Tomogram, camera: CameraFile, refs: list[FrameRef]) -> None:
        """The tomogram again, with its geometry (and the specimen's motion) estimated from its own projections."""
        _, line_integrals = self._tomogram_frames(camera, refs)
        geometry = self.setup.geometry.with_angles(self._angles(refs))
        found = self_calibrate(line_integrals.cpu().numpy(), geometry, self.settings.online_calibration,
                               "rigid" if self.settings.online_motion else None, self.settings, self.device)
        shifts = None if found.shifts_mm is None else torch.from_numpy(found.shifts_mm).float().to(self.device)
        algorithm = direct_algorithm(found.geometry)  # the Fourier method assumes a still specimen
        volume = reconstruct(line_integrals, found.geometry, self.fbp.grid, algorithm=algorithm,
                             filter=self.fbp.filter, shifts_mm=shifts, device=self.device)
        record = found.record()
        self._publish(tomogram, camera, "calibrated", volume, refs, float("nan"), float("nan"),
                      {"self_calibration": record, "algorithm": algorithm,
                       "cor_column": float(found.geometry.cor_value()),
                       "cor_method": "calibrated by reprojection consistency (recon/calibrate.py)"})
        estimates = record.get("calibration", {}).get("estimate", {})
        self.analysis.event("calibration", {
            "tomogram": tomogram.index, "parameters": ",".join(self.settings.online_calibration),
            **{f"estimate_{name}": float(value) for name, value in estimates.items()},
            "motion_rms_mm": float(record.get("motion", {}).get("rms_shift_mm", 0.0))})

    def _gated(self, tomogram: Tomogram, camera: CameraFile, refs: list[FrameRef]) -> None:
        """Retrospective gating: one volume per phase bin and one of the open gate, from the tomogram's frames."""
        values, line_integrals = self._tomogram_frames(camera, refs)
        angles = self._angles(refs)
        phase = values.value("respiratory_phase")
        if not np.isfinite(phase).all():
            raise DocumentContractError(f"tomogram {tomogram.index} was scanned with retrospective gating but its "
                                        "frames carry no respiratory_phase; record the physiology with the frames")
        for selection in gating_selections(phase, values.value("gate", 0.0), self.settings.online_phase_bins):
            chosen = [ref for ref, keep in zip(refs, selection.frames) if keep]
            if len(chosen) < 2:
                logger.warning("online reconstruction: %s of tomogram %d has %d projections; not reconstructed",
                               selection.name, tomogram.index, len(chosen))
                continue
            geometry = self.setup.geometry.with_angles(angles[selection.frames])
            volume = reconstruct(line_integrals[torch.as_tensor(selection.frames)], geometry,
                                 algorithm=self.setup.algorithm, filter=self.fbp.filter,
                                 kernel_width=self.settings.fourier_kernel_width, device=self.device)
            self._publish(tomogram, camera, selection.name, volume, chosen, float("nan"),
                          selection.gate_open_fraction)

    def _publish(self, tomogram: Tomogram, camera: CameraFile, selection: str, volume: torch.Tensor,
                 refs: list[FrameRef], latency_s: float, gate_open_fraction: float,
                 provenance: Mapping[str, Any] | None = None) -> None:
        """Write the volume with its provenance (``provenance`` overrides entries) and publish it (``latency_s``:
        since the last frame arrived)."""
        started = time.perf_counter()
        path = recon_path(camera.path, tomogram.index, selection)
        grid = self.fbp.grid
        with VolumeWriter(path, grid.shape, grid.voxel_size_um, compress=False) as writer:
            writer.write(0, volume)
            writer.provenance({**self._provenance(tomogram, camera, selection, refs), **(provenance or {})},
                              self._angles(refs))
        self.on_written(path)
        logger.info("online reconstruction: wrote %s (%d projections) in %.2f s", path, len(refs),
                    time.perf_counter() - started)
        data = {"volume_file": str(path), "volume_dataset": "/volume", "tomogram": tomogram.index,
                "time_point": tomogram.time_point, "selection": selection or "all", "projections": len(refs),
                "seconds_after_last_frame": latency_s, "gate_open_fraction": gate_open_fraction,
                **mid_slices(volume)}
        self.analysis.event("volumes", data)
        if self.settings.online_segment:
            self._segment(tomogram, path, selection)

    def _segment(self, tomogram: Tomogram, volume_path: Path, selection: str) -> None:
        from ..analysis.segmentation import segment_file  # torch models load only when segmentation is on

        labels_path = volume_path.with_name(volume_path.name.replace("_recon.h5", "_labels.h5"))
        provenance = segment_file(volume_path, labels_path, self.config.analysis)
        self.analysis.event("labels", {"labels_file": str(labels_path), "tomogram": tomogram.index,
                                       "selection": selection or "all", "seconds": float(provenance["seconds"])})
        self.on_written(labels_path)

    def _provenance(self, tomogram: Tomogram, camera: CameraFile, selection: str, refs: list[FrameRef]) -> dict:
        geometry = self.setup.geometry
        s = self.settings
        return {
            "input_file": str(camera.path), "raw_run_uid": self.raw_start["uid"],
            "analysis_run_uid": self.analysis.uid, "tomogram": tomogram.index, "time_point": tomogram.time_point,
            "selection": selection or "all", "frames": [int(r.index) for r in refs],
            "algorithm": self.setup.algorithm, "filter": s.filter, "filter_cutoff": s.filter_cutoff,
            "pad_mode": s.pad_mode, "cor_column": float(geometry.cor_value()),
            "cor_method": "given: detector centre + recon.online_cor_offset_px",
            "binning": self.setup.binning, "projections": len(refs),
            "geometry": {"type": geometry.kind, "rows": geometry.rows, "cols": geometry.cols,
                         "pixel_mm": geometry.pixel_mm},
            "preprocessing": {"zinger_threshold": s.zinger_threshold, "min_transmission": s.min_transmission,
                              "flats": "the latest darks and flats before each projection (online)"},
            "raw_metadata": {key: self.raw_start.get(key) for key in ("scan_id", "plan_name", "subject", "scan",
                                                                       "geometry", "source", "detector")},
            "device": str(self.device),
        }

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()
