"""Who is being imaged: the subject metadata in-vivo plans require."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import PlanParameterError


@dataclass(frozen=True)
class Subject:
    """An animal of a study (all fields required for in-vivo scans; ``day`` is the study day)."""

    subject_id: str
    cohort: str
    treatment: str
    day: float
    anaesthesia: str

    def as_metadata(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SUBJECT_FIELDS = tuple(f.name for f in dataclasses.fields(Subject))


def parse_subject(value: Subject | Mapping[str, Any] | None, *, required: bool) -> Subject | None:
    """A validated :class:`Subject` from a Subject, a mapping (e.g. parsed JSON) or None."""
    example = ("subject={'subject_id': 'M07', 'cohort': 'OVX', 'treatment': 'PTH', 'day': 14, "
               "'anaesthesia': 'isoflurane 2%'}")
    if value is None:
        if required:
            raise PlanParameterError(
                "subject", "an in-vivo scan needs the subject's metadata and none was given", f"pass {example}"
            )
        return None
    if isinstance(value, Subject):
        data = value.as_metadata()
    elif isinstance(value, Mapping):
        data = dict(value)
    else:
        raise PlanParameterError("subject", f"{value!r} is not subject metadata", f"pass {example}")
    unknown = sorted(set(data) - set(SUBJECT_FIELDS))
    if unknown:
        raise PlanParameterError("subject", f"unknown field {unknown[0]!r}", f"use only {', '.join(SUBJECT_FIELDS)}")
    for name in SUBJECT_FIELDS:
        text = data.get(name)
        if text is None or (isinstance(text, str) and not text.strip()):
            raise PlanParameterError(f"subject.{name}", "is missing or empty", f"give the subject's {name}")
    try:
        day = float(data["day"])
    except (TypeError, ValueError):
        raise PlanParameterError("subject.day", f"{data['day']!r} is not a number",
                                 "give the study day, e.g. 14") from None
    if day < 0:
        raise PlanParameterError("subject.day", f"{day:g} is negative", "give the study day counted from day 0")
    return Subject(str(data["subject_id"]), str(data["cohort"]), str(data["treatment"]), day, str(data["anaesthesia"]))
