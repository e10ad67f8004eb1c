"""The registry of the instrument's plans, their parameter documentation, and the record of each call.

:func:`registered` marks a plan function as one that ``nanoscope scan``, the queue
server and the console may run (``PLANS``). It completes the plan's numpydoc
``Parameters`` section with the entries of :data:`SHARED_PARAMETERS` the plan does not
describe itself (written once here, not in every plan), so the docstring is where every
client reads what a parameter means. And it records the plan's arguments, with the
defaults applied, as ``plan_args`` in the ``md`` it passes on, so every start document
says exactly how the run was asked for (bluesky's own plans do the same by hand).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import docstring_parser
from bluesky.utils import MsgGenerator

NOT_RECORDED = ("xrm", "config", "md")
"""Parameters that are not part of how a run was asked for (the instrument, the configuration, extra metadata)."""

SHARED_PARAMETERS: dict[str, str] = {
    "xrm": "The instrument (``nanoscope_daq.devices.Instrument``).",
    "projections": "Angles per tomogram, equally spaced over ``range_deg`` (endpoint excluded).",
    "range_deg": "Angular range of one tomogram (deg; negative turns backwards); None: what one tomogram needs "
                 "in the instrument's geometry (180 in parallel beam, 180 + the fan angle in cone beam).",
    "start_deg": "First angle (deg).",
    "exposure_s": "Exposure per frame (s), inside the camera's limits (camera.exposure_min_s/max_s).",
    "binning": "Camera binning: 1, 2, 4 or 8.",
    "kv": "Source high voltage (kV).",
    "power_w": "Source power (W).",
    "velocity": "Rotation speed (deg/s); None: the fastest the camera keeps up with.",
    "darks": "Darks per set; None: scan.darks of the configuration.",
    "flats": "Flats per set; None: scan.flats of the configuration.",
    "flats_when": "Flats 'before', 'after', 'both' or 'none' of the projections.",
    "gating": "Respiratory gating: 'none', 'prospective' (step scans) or 'retrospective' (every frame tagged "
              "with its phase).",
    "subject": "Subject metadata: subject_id, cohort, treatment, day, anaesthesia (required in vivo).",
    "config": "The instrument's configuration (``nanoscope_daq.config.Config``).",
    "md": "Extra metadata for the start document.",
}
"""What the parameters several plans share mean, in numpydoc wording."""

PLANS: dict[str, Callable[..., MsgGenerator]] = {}
"""Every plan ``nanoscope scan PLAN``, the queue and the console may run, by name."""


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (dataclasses as dicts, sequences as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def parameter_help(plan: Callable[..., MsgGenerator]) -> dict[str, str]:
    """What each parameter of ``plan`` means, from its numpydoc docstring."""
    parsed = docstring_parser.parse(inspect.getdoc(plan) or "", docstring_parser.DocstringStyle.NUMPYDOC)
    return {param.arg_name: " ".join((param.description or "").split()) for param in parsed.params}


def _complete_parameters(plan: Callable[..., MsgGenerator], signature: inspect.Signature) -> None:
    """Append the shared entries the docstring lacks; refuse a parameter documented nowhere."""
    documented = parameter_help(plan)
    missing = [name for name in signature.parameters if name not in documented]
    unknown = [name for name in missing if name not in SHARED_PARAMETERS]
    if unknown:
        raise TypeError(f"plan {plan.__name__}: document the parameters {', '.join(unknown)} in its docstring "
                        "(numpydoc Parameters section)")
    lines = [inspect.getdoc(plan) or plan.__name__]
    if not documented:
        lines += ["", "Parameters", "----------"]
    for name in missing:
        annotation = signature.parameters[name].annotation
        kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
        lines += [f"{name} : {kind}", f"    {SHARED_PARAMETERS[name]}"]
    plan.__doc__ = "\n".join(lines)


def registered(plan: Callable[..., MsgGenerator]) -> Callable[..., MsgGenerator]:
    """Register ``plan`` in :data:`PLANS`, complete its parameter docs, record its arguments when it runs.

    The arguments go into ``md["plan_args"]``; plans that take no ``md`` (no run of
    their own) are registered as they are.
    """
    signature = inspect.signature(plan)
    _complete_parameters(plan, signature)
    if "md" not in signature.parameters:
        PLANS[plan.__name__] = plan
        return plan

    @functools.wraps(plan)
    def recorded(*args: Any, **kwargs: Any) -> MsgGenerator:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        plan_args = {name: json_safe(value) for name, value in bound.arguments.items() if name not in NOT_RECORDED}
        bound.arguments["md"] = {"plan_args": plan_args, **(bound.arguments.get("md") or {})}
        return (yield from plan(*bound.args, **bound.kwargs))

    PLANS[plan.__name__] = recorded
    return recorded


def check_plan_call(plan: Callable[..., MsgGenerator], *args: Any, **kwargs: Any) -> None:
    """Run the checks a plan makes before its first message; raises what the plan raises (a refusal).

    Every plan validates its parameters (and the instrument's limits) before it yields
    anything, so advancing it to its first message and closing it moves nothing.
    """
    generator = plan(*args, **kwargs)
    try:
        next(generator)
    except StopIteration:
        pass
    finally:
        generator.close()

