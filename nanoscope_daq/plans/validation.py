"""Checks every plan runs on its parameters before anything moves; each names the fix."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

from ..config import Config
from ..devices import Instrument
from ..devices.signals import CommandRefused
from .errors import InstrumentNotReady, PlanParameterError

BINNINGS = (1, 2, 4, 8)


def count(name: str, value: object, minimum: int, *, what: str = "frames") -> int:
    """An integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PlanParameterError(name, f"{value!r} is not a whole number", f"give a whole number of {what}")
    if value < minimum:
        raise PlanParameterError(name, f"{value} is below {minimum}", f"give at least {minimum} {what}")
    return int(value)


def number(name: str, value: object, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, unit: str = "") -> float:
    """A finite number within [low, high] (``low_open``: strictly above low)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise PlanParameterError(name, f"{value!r} is not a finite number",
                                 f"give a number{' in ' + unit if unit else ''}")
    value = float(value)
    if low is not None and (value <= low if low_open else value < low):
        bound = "above" if low_open else "at least"
        raise PlanParameterError(name, f"{value:g} {unit} is too small".strip(),
                                 f"give a value {bound} {low:g} {unit}".strip())
    if high is not None and value > high:
        raise PlanParameterError(name, f"{value:g} {unit} is too large".strip(),
                                 f"give at most {high:g} {unit}".strip())
    return value


def choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise PlanParameterError(name, f"{value!r} is not an option", f"choose one of {', '.join(map(repr, choices))}")
    return str(value)


def binning(value: object) -> int:
    factor = count("binning", value, 1, what="pixels")
    if factor not in BINNINGS:
        raise PlanParameterError("binning", f"{factor} is not a binning of the camera", f"choose one of {BINNINGS}")
    return factor


def exposure(value: object, config: Config) -> float:
    cam = config.camera
    return number("exposure_s", value, low=cam.exposure_min_s, high=cam.exposure_max_s, unit="s")


def within_limits(xrm: Instrument, axis: str, positions: Iterable[float], parameter: str) -> None:
    """Every position lies inside the axis' soft limits (LLM..HLM)."""
    motor = getattr(xrm, axis)
    low, high = motor.limits
    if low >= high:  # the record's limits are off
        return
    for position in positions:
        if not low <= position <= high:
            raise PlanParameterError(
                parameter,
                f"{motor.name} would have to reach {position:g} {motor.egu}, outside its limits {low:g} .. {high:g}",
                "choose a range (including the run-up) inside the limits, or move the limits (LLM/HLM)",
            )


def source_range(xrm: Instrument, kv: object, power_w: object) -> tuple[float, float]:
    """kV and W inside the source's limits (whatever state it is in now)."""
    kv = number("kv", kv, low=0, low_open=True, unit="kV")
    power_w = number("power_w", power_w, low=0, low_open=True, unit="W")
    try:
        xrm.source.check_range(kv, power_w)
    except ValueError as exc:
        name = "kv" if "high voltage" in str(exc) else "power_w"
        raise PlanParameterError(name, str(exc), "choose a value inside the range named") from None
    return kv, power_w


def source_output(xrm: Instrument, kv: object, power_w: object) -> tuple[float, float]:
    """kV and W the source can deliver now (warm, interlock OK, within range)."""
    kv, power_w = source_range(xrm, kv, power_w)
    try:
        xrm.source.check_output(kv, power_w)
    except CommandRefused as exc:
        raise InstrumentNotReady(
            "source", str(exc), "switch it on first: nanoscope scan source_on (or the source_on plan)"
        ) from None
    return kv, power_w


def instrument_geometry(xrm: Instrument, config: Config) -> None:
    """The configured imaging geometry and contrast must be those the instrument reports (``<P>INST:``).

    The plans size their angular range, and the pipeline reconstructs, with the
    configured geometry; a mismatch would scan a range the data cannot be reconstructed
    from, or reconstruct with the wrong model.
    """
    reported = {"kind": xrm.inst.geometry.get(use_monitor=False), "contrast": xrm.inst.contrast.get(use_monitor=False)}
    configured = {"kind": config.geometry.kind, "contrast": config.geometry.contrast}
    wrong = [key for key in reported if reported[key] != configured[key]]
    if wrong:
        said = ", ".join(f"geometry.{key} = {configured[key]!r}" for key in wrong)
        actual = ", ".join(f"{reported[key]!r}" for key in wrong)
        fix = ", ".join(f"geometry.{key} = \"{reported[key]}\"" for key in wrong)
        raise PlanParameterError(
            "geometry", f"the configuration says {said}, but the instrument ({xrm.inst.prefix}) reports {actual}",
            f"set {fix} in the configuration file (--config), the instrument's own",
        )


def velocity_for_camera(step_deg: float, velocity: float, min_period_s: float, exposure_s: float) -> None:
    """One grid step must last at least the camera's shortest frame period."""
    if abs(step_deg) / velocity < min_period_s:
        raise PlanParameterError(
            "velocity",
            f"at {velocity:g} deg/s a {abs(step_deg):g} deg step takes {abs(step_deg) / velocity * 1e3:.2f} ms, "
            f"shorter than the camera's frame period {min_period_s * 1e3:.2f} ms at {exposure_s * 1e3:g} ms exposure",
            f"turn at most {abs(step_deg) / min_period_s:.3g} deg/s (or leave velocity unset), shorten the exposure, "
            "or take fewer projections",
        )


def loads(values: object, force_limit_n: float) -> list[float]:
    """A non-empty list of finite loads, each below the loading cell's force limit."""
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise PlanParameterError("loads_n", f"{values!r} is not a list of loads", "give loads in N, e.g. [2, 5, 10]")
    checked = [number("loads_n", v, unit="N") for v in values]
    for value in checked:
        if abs(value) >= force_limit_n:
            raise PlanParameterError(
                "loads_n", f"{value:g} N is not below the force limit {force_limit_n:g} N",
                "lower the load, or raise the loading cell's force limit (FORCE_LIM) if the specimen allows",
            )
    return checked
