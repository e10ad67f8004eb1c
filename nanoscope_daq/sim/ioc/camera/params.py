"""areaDetector-style parameter tables: one declaration per asyn parameter, PVs generated.

An areaDetector record set is hundreds of near-identical records: a set point ``X``
and its readback ``X_RBV``, a few read-only readbacks, a few plain records. Writing
each as a hand-made pvproperty would bury the behaviour in boilerplate, so a table
of :class:`Param` declarations generates the PVs, and a :class:`ParamGroup` routes
every put through one place: an ``@on_put("X")`` handler when the driver reacts to
``X``, else the value is accepted as is. The handler returns what ``X_RBV`` shows
(the real driver's readback: clamped, normalised), or raises to refuse the put.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

NO_YES = ("No", "Yes")
DISABLE_ENABLE = ("Disable", "Enable")
DONE_CAPTURE = ("Done", "Capture")
OFF_ON = ("Off", "On")
OK_ERROR = ("Ok", "Error")
STRING_LENGTH = 1024
"""Length of the char-waveform string PVs (paths, names, messages), as NELM in ADCore."""

PutHandler = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Param:
    """One asyn parameter and the PVs that serve it.

    ``rbv``: a writable set point ``suffix`` plus a read-only ``suffix_RBV`` (ophyd's
    ``EpicsSignalWithRBV``). Without ``rbv`` one PV is served, writable unless
    ``read_only``. The initial value's Python type gives the Channel Access type:
    float -> DOUBLE, int -> LONG, str -> STRING or, ``long``, a char waveform
    (``enum`` makes it ENUM).
    """

    suffix: str
    value: Any
    doc: str = ""
    rbv: bool = True
    read_only: bool = False
    enum: tuple[str, ...] | None = None
    units: str = ""
    record: str | None = None
    """Record type whose fields are served too (e.g. ``mbbi`` for ``DataType_RBV.DISA``)."""
    long: bool = False
    """A string served as a char waveform of STRING_LENGTH (paths, messages) instead of a
    40-character DBR_STRING (names, versions, ports)."""
    fixed: bool = False
    """Served for compatibility, but the simulator implements only the initial value: other
    values are refused with a message saying so (rather than accepted and ignored)."""

    @property
    def readback(self) -> str:
        return self.suffix + "_RBV" if self.rbv else self.suffix


def rbv(suffix: str, value: Any, doc: str = "", **kwargs: Any) -> Param:
    """A set point with its readback."""
    return Param(suffix, value, doc, rbv=True, **kwargs)


def ro(suffix: str, value: Any, doc: str = "", **kwargs: Any) -> Param:
    """A read-only readback (the suffix usually ends in _RBV)."""
    return Param(suffix, value, doc, rbv=False, read_only=True, **kwargs)


def plain(suffix: str, value: Any, doc: str = "", **kwargs: Any) -> Param:
    """One writable PV without a readback."""
    return Param(suffix, value, doc, rbv=False, **kwargs)


def _attr_name(pv_suffix: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", pv_suffix)
    return re.sub(r"\W", "_", snake).lower()


def _pv_kwargs(param: Param, read_only: bool) -> dict[str, Any]:
    value = param.value
    kwargs: dict[str, Any] = {"value": value, "doc": param.doc or None, "read_only": read_only}
    if param.enum is not None:
        if value not in param.enum:
            raise ValueError(f"{param.suffix}: initial value {value!r} is not one of {param.enum}")
        kwargs.update(dtype=ChannelType.ENUM, enum_strings=param.enum)
    elif isinstance(value, str) and param.long:
        kwargs.update(dtype=ChannelType.CHAR, max_length=STRING_LENGTH, string_encoding="utf-8")
    elif isinstance(value, str):
        kwargs.update(dtype=ChannelType.STRING)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param.suffix}: unsupported initial value {value!r}; use float, int, str or an enum")
    if param.units:
        kwargs["units"] = param.units
    return kwargs


def _make_putter(suffix: str) -> Callable:
    async def putter(group: ParamGroup, instance: Any, value: Any) -> Any:
        return await group.apply_put(suffix, value)

    return putter


def param_properties(params: Iterable[Param]) -> dict[str, pvproperty]:
    """The pvproperties serving ``params``, keyed by attribute name."""
    props: dict[str, pvproperty] = {}
    for param in params:
        names = [(param.suffix, not param.read_only)]
        if param.rbv:
            names.append((param.readback, False))
        for pv_suffix, writable in names:
            attr = _attr_name(pv_suffix)
            if attr in props:
                raise ValueError(f"PV {pv_suffix} declared twice")
            kwargs = _pv_kwargs(param, read_only=not writable)
            if pv_suffix == param.readback and param.record:
                kwargs["record"] = param.record
            put = _make_putter(param.suffix) if writable else None
            props[attr] = pvproperty(name=pv_suffix, put=put, **kwargs)
    return props


def on_put(suffix: str) -> Callable[[PutHandler], PutHandler]:
    """Mark an ``async def handler(self, value) -> readback`` for puts to ``suffix``."""

    def mark(method: PutHandler) -> PutHandler:
        method.__dict__.setdefault("_param_suffixes", []).append(suffix)
        return method

    return mark


class ParamGroup(PVGroup):
    """A PV group generated from :class:`Param` tables (see :func:`param_group_class`)."""

    params: Sequence[Param] = ()

    def __init__(self, prefix: str, **kwargs: Any) -> None:
        super().__init__(prefix, **kwargs)
        self._params = {p.suffix: p for p in self.params}
        self._handlers: dict[str, PutHandler] = {}
        for name in dir(type(self)):
            method = getattr(type(self), name, None)
            for suffix in getattr(method, "_param_suffixes", ()):
                if suffix not in self._params:
                    raise ValueError(f"{type(self).__name__}.{name} handles {suffix}, which is not declared")
                self._handlers[suffix] = getattr(self, name)

    def pv(self, pv_suffix: str):
        """The ChannelData serving ``prefix + pv_suffix``."""
        return self.pvdb[self.prefix + pv_suffix]

    def value(self, suffix: str) -> Any:
        """Current value of a parameter: its readback where it has one."""
        return self.pv(self._params[suffix].readback).value

    async def apply_put(self, suffix: str, value: Any) -> Any:
        """Route a client's put; the handler's result is what the readback shows.

        With an ``_RBV`` the set point keeps the client's ``value`` (as a real driver's
        output record does) and ``_RBV`` shows the result; a PV without one stores it.
        """
        param = self._params[suffix]
        if isinstance(value, np.generic):
            value = value.item()
        try:
            if param.fixed and value != param.value:
                raise ValueError(f"the simulated detector supports only {param.value!r} here, not {value!r}")
            handler = self._handlers.get(suffix)
            readback = value if handler is None else await handler(value)
        except ValueError as exc:
            message = f"{suffix}={value!r} refused: {exc}"
            await self.refused(message)
            raise ValueError(message) from None
        if param.rbv:
            await self.pv(param.readback).write(readback)
        await self.param_changed(suffix, readback)
        return value if param.rbv else readback

    async def refused(self, message: str) -> None:
        """Hook: a put was refused (the client's put fails with ``message``, but pyepics ignores
        that): show the reason where clients look, e.g. a status-message PV."""

    async def param_changed(self, suffix: str, readback: Any) -> None:
        """Hook after a client's put took effect (the readback is posted): update what depends on it.

        For a parameter without _RBV the new value is ``readback``; it is stored once this returns.
        """

    async def post(self, suffix: str, value: Any, *, setpoint: bool = False) -> None:
        """Driver-side update of a readback (and of the set point too, with ``setpoint``).

        Skips the handler: this is the driver changing its own state (asyn:READBACK).
        """
        param = self._params[suffix]
        channel = self.pv(param.readback)
        if channel.value != value:
            await channel.write(value, verify_value=False)
        if setpoint and param.rbv and self.pv(suffix).value != value:
            await self.pv(suffix).write(value, verify_value=False)


def param_group_class(name: str, doc: str, *tables: Sequence[Param], base: type = ParamGroup) -> type:
    """A ParamGroup subclass serving every parameter of ``tables`` (later tables override)."""
    merged: dict[str, Param] = {}
    for table in tables:
        for param in table:
            merged[param.suffix] = param
    namespace: dict[str, Any] = {"__doc__": doc, "params": tuple(merged.values())}
    namespace.update(param_properties(merged.values()))
    return type(base)(name, (base,), namespace)
