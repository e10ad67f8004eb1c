"""A simulated study cohort with known truth: NXtomo files of several mice per group at several time points.

The study ``nanoscope analyze`` is tested and benchmarked on. Two groups (sham-operated
and ovariectomised mice, ``GROUPS``) differ in what the simulator applies: formation
(periosteal and endosteal mineral apposition rates), resorption (pits per day) and
cortical porosity (canals and lacunae per volume). Each mouse draws its own rates around
its group's (``between_mouse_cv``, the biological spread) and its own anatomy (its seed),
and is imaged on each study day of ``CohortSpec.days``.

Path chosen: the imaging physics directly, not scans through the IOCs. Each frame is
rendered by the simulated camera's own ``Imager`` (exact line integrals of the tiny-leg
phantom, focal spot and detector blur, sCMOS noise), written to an areaDetector-layout
camera file by the simulator's HDF5 writer, and the tomogram is written by the NXtomo
writer of the live pipeline (``pipeline.nxtomo_layout.write_nxtomo``: virtual datasets into
the camera file, subject metadata, image keys classified as online). What the IOC path
would add -- motors, source ramps, Channel Access, the RunEngine -- costs minutes per
tomogram and changes nothing the analysis reads; this way a cohort of 24 tomograms
renders in minutes on two cores. The mouse is anaesthetised with its leg fixed, so
there is no breathing motion and the tomograms are not gated.

Next to each NXtomo file the simulator's ``ground_truth.h5`` of that day is written, and
``cohort_truth.json`` in the output directory holds, per mouse, the applied rates and,
per day and interval, the true porosity, BFR, BRR and MAR. Porosity, BFR and BRR are those
of the imaged box (the region the tomograms show, as two images of it see the change);
the whole bone's BFR and BRR are kept beside them (``*_whole_bone_per_day``).

Run ``python -m nanoscope_daq.cohort --out DIR [--mice-per-group N] [--days 0 5 10]``;
``--truth-only`` rewrites the cohort_truth.json of a cohort written before without imaging it again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .config import Config, load_config
from .documents import ATTRIBUTE_KEYS, ImageKey
from .physics.presets import TINY_LEG_PHANTOM, tiny_leg_config
from .pipeline.camera_file import CameraFrames
from .pipeline.frame_ranges import FrameRange
from .pipeline.image_keys import classify_frames
from .pipeline.nxtomo_layout import RunRecord, write_nxtomo
from .pipeline.tomogram import Grid, Tomogram
from .sim.hdf5_writer import FileRequest, Frame, Hdf5FrameWriter
from .sim.imaging.exposure import Exposure
from .sim.imaging.groundtruth import imaged_box, resorbed_in_box
from .sim.imaging.imager import Imager
from .sim.ioc.camera.frames import ATTRIBUTES

STUDY_EPOCH_S = 1.7e9
"""POSIX time of study day 0 (frame times are this plus the day plus the frame period)."""
KV, POWER_W = 60.0, 10.0
"""The source setting of every tomogram (the demo's)."""


@dataclass(frozen=True)
class GroupTruth:
    """What the simulator applies to a group's mice (their means; each mouse varies around them)."""

    cohort: str
    treatment: str
    periosteal_mar_um_per_day: float
    endosteal_mar_um_per_day: float
    pits_per_day: float
    haversian_canal_count: int
    lacuna_density_per_mm3: float


GROUPS: tuple[GroupTruth, ...] = (
    GroupTruth("sham", "sham surgery", periosteal_mar_um_per_day=1.5, endosteal_mar_um_per_day=1.0,
               pits_per_day=0.5, haversian_canal_count=2, lacuna_density_per_mm3=6.0e4),
    GroupTruth("ovx", "ovariectomy", periosteal_mar_um_per_day=0.9, endosteal_mar_um_per_day=0.4,
               pits_per_day=3.0, haversian_canal_count=8, lacuna_density_per_mm3=9.0e4),
)
"""Oestrogen loss: less formation, more resorption (more and deeper pits), a more porous cortex."""

COHORT_PHANTOM: dict[str, Any] = {
    "haversian_diameter_min_um": 10.0, "haversian_diameter_max_um": 14.0,
    "pit_depth_min_um": 8.0, "pit_depth_max_um": 14.0, "pit_width_min_um": 20.0, "pit_width_max_um": 30.0,
}
"""Beyond the tiny leg: canals and pits a few 2.2 um voxels across, so that 5-voxel features are measurable."""


@dataclass(frozen=True)
class CohortSpec:
    """Size of the cohort and of each tomogram."""

    mice_per_group: int = 4
    days: tuple[float, ...] = (0.0, 5.0, 10.0)
    rows: int = 48
    """Detector rows: 48 rows of 2.2 um image 106 um of the 400 um bone."""
    projections: int = 360
    exposure_s: float = 0.2
    """Long enough (10 W source) that 10 um canals and 10 um deep pits stand above the noise (0.02 s: they do not)."""
    darks: int = 4
    flats: int = 4
    """Flats before and again after the projections."""
    between_mouse_cv: float = 0.1
    seed: int = 1

    def __post_init__(self) -> None:
        if self.mice_per_group < 1 or self.projections < 2 or self.rows < 8:
            raise ValueError(f"a cohort needs >= 1 mouse per group, >= 2 projections and >= 8 rows, got {self}")
        if len(self.days) < 1 or any(b <= a for a, b in zip(self.days, self.days[1:])):
            raise ValueError(f"study days must be increasing, got {self.days}")
        if not 0 <= self.days[0] <= self.days[-1] <= TINY_LEG_PHANTOM["max_study_day"]:
            raise ValueError(f"study days must lie in 0 .. {TINY_LEG_PHANTOM['max_study_day']}, got {self.days}")


@dataclass(frozen=True)
class Mouse:
    """One mouse: its group, identity, seed and the rates applied to it."""

    subject_id: str
    group: GroupTruth
    seed: int
    phantom: dict[str, Any]

    def config(self, spec: CohortSpec, base: Config) -> Config:
        """``base`` with the tiny leg, this mouse's phantom and seed, and the cohort's detector rows."""
        return tiny_leg_config(base, detector={"pixels_y": spec.rows}, sim={"phantom": self.phantom, "seed": self.seed})


def mice(spec: CohortSpec) -> list[Mouse]:
    """Every mouse of the cohort, its rates drawn around its group's (reproducible from ``spec.seed``)."""
    out = []
    for g, group in enumerate(GROUPS):
        for m in range(spec.mice_per_group):
            rng = np.random.default_rng([spec.seed, g, m])

            def spread(value: float, rng: np.random.Generator = rng) -> float:
                return float(value * max(0.2, 1 + spec.between_mouse_cv * rng.standard_normal()))

            phantom = {**TINY_LEG_PHANTOM, **COHORT_PHANTOM,
                       "periosteal_mar_um_per_day": spread(group.periosteal_mar_um_per_day),
                       "endosteal_mar_um_per_day": spread(group.endosteal_mar_um_per_day),
                       "pits_per_day": spread(group.pits_per_day),
                       "lacuna_density_per_mm3": spread(group.lacuna_density_per_mm3),
                       "haversian_canal_count": group.haversian_canal_count}
            out.append(Mouse(f"{group.cohort.upper()}{m + 1:02d}", group, 1000 * spec.seed + 100 * g + m, phantom))
    return out


def tomogram_stem(subject_id: str, day: float) -> str:
    return f"{subject_id}_day{day:02g}"


def generate(out: Path, spec: CohortSpec, base: Config, workers: int | None = None) -> list[Path]:
    """Write the cohort under ``out`` (one folder per cohort and mouse); returns the NXtomo files.

    Each mouse is imaged with ``base`` (the configuration) and the tiny leg; ``workers``
    processes render mice in parallel (default: one per CPU).
    """
    out.mkdir(parents=True, exist_ok=True)
    results = _each_mouse(_image_mouse, out, spec, base, workers)
    _write_truth(out, spec, [record for record, _ in results])
    return [path for _, paths in results for path in paths]


def _each_mouse(function: Callable[[Mouse, Path, CohortSpec, Config], Any], out: Path, spec: CohortSpec,
                base: Config, workers: int | None) -> list[Any]:
    """``function(mouse, out, spec, base)`` for every mouse of the cohort, ``workers`` processes at a time."""
    cohort = mice(spec)
    workers = max(1, min(workers or os.cpu_count() or 1, len(cohort)))
    # spawn, not fork: a forked child of a process with threads (torch, Channel Access, a catalog
    # client) can inherit a lock another thread held and wait on it forever
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(function, cohort, [out] * len(cohort), [spec] * len(cohort), [base] * len(cohort)))


def _image_mouse(mouse: Mouse, out: Path, spec: CohortSpec, base: Config) -> tuple[dict, list[Path]]:
    """Image one mouse on every study day; its truth record and NXtomo files."""
    import torch

    torch.set_num_threads(1)
    config = mouse.config(spec, base)
    imager = Imager(config)
    folder = out / mouse.group.cohort / mouse.subject_id
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, day in enumerate(spec.days):
        stem = tomogram_stem(mouse.subject_id, day)
        paths.append(_image_tomogram(imager, config, mouse, spec, day, number, folder / stem))
        imager.write_ground_truth(_truth_path(folder, stem), day, 1)
    return _mouse_truth(mouse, imager, spec, folder), paths


def recompute_truth(out: Path, base: Config, workers: int | None = None) -> Path:
    """Rewrite ``out``/cohort_truth.json of a cohort written before, from its ground_truth.h5 files and the
    specimen model (nothing is imaged again); returns its path.

    The cohort's size and seed are read from the cohort_truth.json there; ``base`` must be the configuration
    it was generated with.
    """
    path = out / "cohort_truth.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --truth-only recomputes the truth of a cohort generated "
                                "before; generate one first (python -m nanoscope_daq.cohort --out DIR)")
    stored = json.loads(path.read_text())["spec"]
    spec = CohortSpec(**{**stored, "days": tuple(stored["days"])})
    _write_truth(out, spec, _each_mouse(_recompute_mouse_truth, out, spec, base, workers))
    return path


def _recompute_mouse_truth(mouse: Mouse, out: Path, spec: CohortSpec, base: Config) -> dict:
    return _mouse_truth(mouse, Imager(mouse.config(spec, base)), spec, out / mouse.group.cohort / mouse.subject_id)


def _write_truth(out: Path, spec: CohortSpec, records: list[dict]) -> None:
    truth = {"spec": dataclasses.asdict(spec), "groups": [dataclasses.asdict(g) for g in GROUPS], "mice": records}
    (out / "cohort_truth.json").write_text(json.dumps(truth, indent=2))


def _truth_path(folder: Path, stem: str) -> Path:
    return folder / f"{stem}_ground_truth.h5"


def _mouse_truth(mouse: Mouse, imager: Imager, spec: CohortSpec, folder: Path) -> dict:
    """The truth record of one mouse: its applied rates, per day (ground_truth.h5) and per interval."""
    days = []
    for day in spec.days:
        path = _truth_path(folder, tomogram_stem(mouse.subject_id, day))
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the cohort under {folder.parent.parent} is incomplete; "
                                    "generate it again")
        days.append(_day_truth(path))
    box = imaged_box(imager, 1)
    states = [imager.state(imager.snap_day(day, 1)) for day in spec.days]
    resorbed = [resorbed_in_box(a, b, box) for a, b in zip(states, states[1:])]
    return {"subject_id": mouse.subject_id, "cohort": mouse.group.cohort, "seed": mouse.seed,
            "applied": {key: mouse.phantom[key] for key in ("periosteal_mar_um_per_day", "endosteal_mar_um_per_day",
                                                            "pits_per_day", "lacuna_density_per_mm3",
                                                            "haversian_canal_count")},
            "days": days, "intervals": [_interval_truth(a, b, r) for a, b, r in zip(days, days[1:], resorbed)]}


def _day_truth(path: Path) -> dict[str, float]:
    """Porosity and bone in the imaged box and the whole bone's remodelling since day 0, from ground_truth.h5."""
    with h5py.File(path, "r") as h5:
        box, whole, remodel = h5["volumes"].attrs, h5["volumes/whole_bone"].attrs, h5["remodeling"].attrs
        pores = float(box["lcn_mm3"] + box["vessel_mm3"])
        return {"day": float(h5.attrs["day"]),
                "porosity": pores / (float(box["bone_tissue_mm3"]) + float(box["vessel_mm3"])),
                "lacunar_porosity": float(box["porosity"]),
                "bone_tissue_mm3": float(box["bone_tissue_mm3"]),
                "bone_tissue_whole_mm3": float(whole["bone_tissue_mm3"]),
                "formed_whole_mm3": float(remodel["formed_mm3"]), "resorbed_whole_mm3": float(remodel["resorbed_mm3"]),
                "periosteal_mar_um_per_day": float(remodel["periosteal_mar_um_per_day"]),
                "endosteal_mar_um_per_day": float(remodel["endosteal_mar_um_per_day"])}


def _interval_truth(before: dict, after: dict, resorbed_mm3: float) -> dict[str, float]:
    """BFR, BRR (per day, of the baseline's bone) and MAR the simulator applied between two days.

    ``bfr_per_day`` and ``brr_per_day`` are those of the imaged box, as two images of it see them:
    ``resorbed_mm3`` (groundtruth.resorbed_in_box) of the baseline's bone in the box is gone, and what the box's
    bone gained besides was formed. The whole bone's figures (``*_whole_bone_per_day``) count pits outside the
    box too, and the bone that apposition would have laid inside a pit after the baseline's day.
    """
    days = after["day"] - before["day"]
    bone, whole = before["bone_tissue_mm3"], before["bone_tissue_whole_mm3"]
    formed_mm3 = after["bone_tissue_mm3"] - bone + resorbed_mm3
    return {"from_day": before["day"], "to_day": after["day"],
            "bfr_per_day": formed_mm3 / bone / days, "brr_per_day": resorbed_mm3 / bone / days,
            "bfr_whole_bone_per_day": (after["formed_whole_mm3"] - before["formed_whole_mm3"]) / whole / days,
            "brr_whole_bone_per_day": (after["resorbed_whole_mm3"] - before["resorbed_whole_mm3"]) / whole / days,
            "mar_periosteal_um_per_day": after["periosteal_mar_um_per_day"],
            "mar_endosteal_um_per_day": after["endosteal_mar_um_per_day"]}


def _image_tomogram(imager: Imager, config: Config, mouse: Mouse, spec: CohortSpec, day: float, time_point: int,
                    stem: Path) -> Path:
    """Darks, flats, a full turn of projections and flats again, written as a camera file and an NXtomo file."""
    step = 360.0 / spec.projections
    flat_offset = (0.5, 0.0, 0.0)
    plan = ([(ImageKey.DARK, 0.0, (0.0, 0.0, 0.0))] * spec.darks + [(ImageKey.FLAT, 0.0, flat_offset)] * spec.flats
            + [(ImageKey.PROJECTION, i * step, (0.0, 0.0, 0.0)) for i in range(spec.projections)]
            + [(ImageKey.FLAT, 360.0 - step, flat_offset)] * spec.flats)
    period_s = spec.exposure_s + 0.005
    start_s = STUDY_EPOCH_S + day * 86400.0
    rng = np.random.default_rng([mouse.seed, time_point])
    camera_path = stem.with_name(stem.name + "_camera.h5")
    writer = Hdf5FrameWriter(16)
    writer.open(FileRequest(camera_path, attributes=ATTRIBUTES)).result(30)
    current_ma = POWER_W / KV
    values: dict[str, list[float]] = {key: [] for key in ATTRIBUTE_KEYS}
    try:
        for i, (key, angle, offset) in enumerate(plan):
            beam = key != ImageKey.DARK
            exposure = Exposure(angle_deg=angle, sample_offset_mm=offset, respiration_mm=0.0, force_n=0.0, day=day,
                                exposure_s=spec.exposure_s, kv=KV, power_w=POWER_W,
                                spot_um=config.source.spot_default_um, xrays_on=beam)
            t = start_s + i * period_s
            frame_values = {"rotation_angle": angle, "encoder_angle": angle, "frame_time": t,
                            "source_current": current_ma if beam else 0.0, "force": 0.0, "respiratory_phase": 0.0,
                            "gate": 1.0, "frame_type": float(key)}
            for name, value in frame_values.items():
                values[name].append(value)
            attributes = {ATTRIBUTE_KEYS[name][0]: value for name, value in frame_values.items()
                          if name != "frame_time"}
            attributes.update(SourceVoltage=KV if beam else 0.0, ExposureTime=spec.exposure_s)
            writer.submit(Frame(i + 1, t, imager.render(exposure, rng), {**dict.fromkeys(ATTRIBUTES, 0.0),
                                                                           **attributes}))
        summary = writer.close().result(60)
    finally:
        writer.stop()
    if summary is not None and summary.error is not None:
        raise RuntimeError(f"writing {camera_path} failed: {summary.error}")
    keys = np.array([key for key, _, _ in plan], dtype=np.int8)
    indices = np.arange(len(plan))
    parts = tuple((ImageKey(k), FrameRange(int(r[0]), int(r[-1]) + 1))
                  for k, r in _runs(keys, indices))
    grid = Grid(0.0, step, spec.projections)
    rows, cols = imager.frame_shape(1)
    frames = CameraFrames(camera_path, "/entry/data/data", (len(plan), rows, cols), np.dtype(np.uint16), indices,
                          {name: np.asarray(v, np.float64) for name, v in values.items()})
    tomogram = Tomogram(0, time_point, camera_path, parts, grid)
    classification = classify_frames(keys, source_current=frames.values["source_current"],
                                     rotation_angle=frames.values["rotation_angle"], grid=grid,
                                     frame_type=frames.values["frame_type"])
    path = stem.with_name(stem.name + ".nxs")
    write_nxtomo(path, tomogram, frames, classification,
                 RunRecord(_start_document(imager, config, mouse, spec, day, period_s, rows, cols),
                           "success"))
    return path


def _runs(keys: np.ndarray, indices: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Consecutive frames of one image key, in order."""
    cuts = np.flatnonzero(np.diff(keys)) + 1
    return [(int(k[0]), r) for k, r in zip(np.split(keys, cuts), np.split(indices, cuts))]


def _start_document(imager: Imager, config: Config, mouse: Mouse, spec: CohortSpec, day: float, period_s: float,
                    rows: int, cols: int) -> dict[str, Any]:
    """The start-document sections the NXtomo writer records (docs/documents.md)."""
    geometry = config.geometry
    pixel_um = config.detector.pixel_um
    magnification = imager.geometry.magnification
    group = mouse.group
    return {
        "uid": f"cohort-{mouse.seed}-{day:g}", "scan_id": int(day * 10) + 1, "plan_name": "fly_tomo",
        "plan_args": {"projections": spec.projections, "range_deg": 360.0, "exposure_s": spec.exposure_s},
        "scan": {"kind": "fly", "start_deg": 0.0, "range_deg": 360.0, "projections": spec.projections,
                 "exposure_s": spec.exposure_s, "period_s": period_s, "binning": 1, "darks": spec.darks,
                 "flats": spec.flats, "gating": "none"},
        "subject": {"subject_id": mouse.subject_id, "cohort": group.cohort, "treatment": group.treatment,
                    "day": float(day), "anaesthesia": "isoflurane 2%"},
        "geometry": {"type": imager.geometry.kind, "source_sample_mm": geometry.source_sample_mm,
                     "source_detector_mm": geometry.source_detector_mm, "magnification": magnification,
                     "detector_pixel_um": pixel_um, "voxel_size_um": imager.voxel_size_um(1), "rows": rows,
                     "cols": cols},
        "source": {"anode": config.source.anode, "kv": KV, "power_w": POWER_W,
                   "spot_um": config.source.spot_default_um, "energy_kev": imager.energy_kev(KV)},
        "detector": {"model": "simulated sCMOS", "exposure_s": spec.exposure_s, "period_s": period_s, "binning": 1,
                     "pixel_encoding": "Mono16"},
        "dose": {},
        "generator": "nanoscope_daq.cohort",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanoscope_daq.cohort", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the cohort into")
    parser.add_argument("--config", help="TOML file overriding the defaults (the tiny leg replaces the phantom)")
    parser.add_argument("--mice-per-group", type=int, default=CohortSpec.mice_per_group)
    parser.add_argument("--days", type=float, nargs="+", default=list(CohortSpec.days))
    parser.add_argument("--rows", type=int, default=CohortSpec.rows)
    parser.add_argument("--projections", type=int, default=CohortSpec.projections)
    parser.add_argument("--seed", type=int, default=CohortSpec.seed)
    parser.add_argument("--workers", type=int, help="processes rendering mice in parallel (default: one per CPU)")
    parser.add_argument("--truth-only", action="store_true",
                        help="image nothing: rewrite DIR/cohort_truth.json of a cohort generated before (its size "
                             "and seed are read from there) from its ground_truth.h5 files and the specimen model")
    args = parser.parse_args(argv)
    if args.truth_only:
        print(recompute_truth(Path(args.out), load_config(args.config), args.workers))
        return 0
    spec = CohortSpec(mice_per_group=args.mice_per_group, days=tuple(args.days), rows=args.rows,
                      projections=args.projections, seed=args.seed)
    for path in generate(Path(args.out), spec, load_config(args.config), args.workers):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
