"""Which tomograms a study analyses: a source of tomogram records, filtered by a selection.

``TomogramSource`` is what the batch asks for; ``NXtomoFiles`` answers it from NXtomo
files (the subject metadata the NXtomo writer records under ``/entry/sample/subject``
and the acquisition's plan, run uid and gating). A catalog source (runs found by the
start document's ``subject.*`` and ``plan_name`` keys, DESIGN.md) answers the same
protocol with the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import h5py


class SelectionError(ValueError):
    """Inputs that select no tomogram, or tomograms that lack what the analysis needs."""


@dataclass(frozen=True)
class TomogramRecord:
    """One tomogram of the study: where it is and whose it is."""

    path: Path
    subject_id: str
    cohort: str
    treatment: str
    day: float
    plan_name: str
    raw_run_uid: str
    gating: str
    """The scan's gating ('none', 'prospective', 'retrospective')."""

    @property
    def key(self) -> str:
        """A name unique in the study: subject and day."""
        return f"{self.subject_id}_day{self.day:g}"


@dataclass(frozen=True)
class Selection:
    """Keep tomograms matching every non-empty criterion (any of the values given for it)."""

    subjects: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()
    treatments: tuple[str, ...] = ()
    days: tuple[float, ...] = ()
    plans: tuple[str, ...] = ()

    def matches(self, record: TomogramRecord) -> bool:
        checks = ((self.subjects, record.subject_id), (self.cohorts, record.cohort),
                  (self.treatments, record.treatment), (self.days, record.day), (self.plans, record.plan_name))
        return all(not wanted or value in wanted for wanted, value in checks)


class TomogramSource(Protocol):
    """Anything that lists the study's tomograms (NXtomo files, or the run catalog)."""

    def tomograms(self, selection: Selection) -> list[TomogramRecord]:
        """The selected tomograms, by subject then day."""
        ...


@dataclass(frozen=True)
class NXtomoFiles:
    """NXtomo files given one by one or as directories (searched recursively for ``*.nxs``)."""

    paths: Sequence[Path] = field(default_factory=tuple)

    def tomograms(self, selection: Selection) -> list[TomogramRecord]:
        files = sorted(set(_expand(self.paths)))
        if not files:
            raise SelectionError(f"no NXtomo (.nxs) files in {', '.join(map(str, self.paths))}; give NXtomo files "
                                 "or directories holding them")
        return choose([read_record(path) for path in files], selection)


def choose(records: Sequence[TomogramRecord], selection: Selection) -> list[TomogramRecord]:
    """The records ``selection`` keeps, by subject then day; refuses none kept, or two of one subject and day."""
    chosen = sorted((r for r in records if selection.matches(r)), key=lambda r: (r.subject_id, r.day))
    if not chosen:
        raise SelectionError(f"none of the {len(records)} tomograms matches the selection {selection}; "
                             f"subjects present: {sorted({r.subject_id for r in records})}, cohorts: "
                             f"{sorted({r.cohort for r in records})}, days: {sorted({r.day for r in records})}")
    seen: dict[str, Path] = {}
    for record in chosen:
        if record.key in seen:
            raise SelectionError(f"{record.path} and {seen[record.key]} are both subject {record.subject_id} on "
                                 f"day {record.day:g}; select one (e.g. by --plan) or analyse them separately")
        seen[record.key] = record.path
    return chosen


def _expand(paths: Iterable[Path]) -> Iterable[Path]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from (p.resolve() for p in path.rglob("*.nxs"))
        elif path.is_file():
            yield path.resolve()
        else:
            raise SelectionError(f"{path} does not exist; give NXtomo files or directories holding them")


def read_record(path: Path) -> TomogramRecord:
    """The record of one NXtomo file, from its subject and acquisition metadata."""
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise SelectionError(f"cannot open {path} as HDF5 ({exc}); give NXtomo files written by the instrument") \
            from None
    with h5:
        entry = h5.get("entry")
        subject = entry.get("sample/subject") if entry is not None else None
        if subject is None or "subject_id" not in subject or "day" not in subject:
            raise SelectionError(f"{path} has no /entry/sample/subject with subject_id and day; a study needs the "
                                 "subject metadata the scan plans record (plans/subject.py)")
        acquisition = entry.get("acquisition", {})
        scan = json.loads(_text(acquisition["scan"])) if "scan" in acquisition else {}
        return TomogramRecord(
            path=Path(path), subject_id=_text(subject["subject_id"]), cohort=_text(subject.get("cohort", "")),
            treatment=_text(subject.get("treatment", "")), day=float(subject["day"][()]),
            plan_name=_text(acquisition.get("plan_name", "")), raw_run_uid=_text(acquisition.get("run_uid", "")),
            gating=str(scan.get("gating", "none")))


def _text(node: object) -> str:
    value = node[()] if isinstance(node, h5py.Dataset) else node
    return value.decode() if isinstance(value, bytes) else str(value)
