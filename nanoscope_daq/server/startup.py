"""The RE Manager worker's startup module: the instrument, a RunEngine, its callbacks, the plans.

``start-re-manager --startup-module nanoscope_daq.server.startup`` imports this module
each time the worker environment opens; the configuration comes from ``$NANOSCOPE_CONFIG``
(``nanoscope serve`` writes it). The data of record is written here, in the worker: the
NXtomo files and the catalog entries do not depend on any 0MQ subscriber. Documents are
also published, as JSON, into the server's 0MQ proxy for live analysis and the console.

The namespace holds exactly what the queue may use: the instrument ``xrm`` and one plan per
registered plan, its ``config`` bound (the permissions file admits nothing else).
"""

from __future__ import annotations

import functools
import inspect
import typing

from ..config import Config, load_config
from ..epics_env import configure_client

CONFIG: Config = load_config()
configure_client([CONFIG.epics.port])

from bluesky import RunEngine  # noqa: E402 -- after Channel Access is configured
from bluesky.callbacks.zmq import Publisher  # noqa: E402
from bluesky_queueserver import parameter_annotation_decorator  # noqa: E402

from ..pipeline import NXtomoWriter  # noqa: E402
from ..pipeline.catalog import CatalogWriter  # noqa: E402
from ..pipeline.journal import DocumentJournal  # noqa: E402
from ..plans import PLANS  # noqa: E402
from ..scan_cli import connect_instrument  # noqa: E402
from .documents_socket import RAW_PREFIX, serialize  # noqa: E402


def with_config(plan, config: Config):
    """``plan`` with its ``config`` parameter bound: the signature the queue shows and validates."""
    signature = inspect.signature(plan)

    @functools.wraps(plan)
    def bound(*args, **kwargs):
        extra = {"config": config} if "config" in signature.parameters else {}
        return (yield from plan(*args, **extra, **kwargs))

    hints = typing.get_type_hints(plan)  # the plans postpone annotations; the queue validates real types
    bound.__signature__ = signature.replace(
        parameters=[p.replace(annotation=hints.get(p.name, p.annotation))
                    for p in signature.parameters.values() if p.name != "config"],
        return_annotation=hints.get("return", signature.return_annotation))
    bound.__annotations__ = {k: v for k, v in hints.items() if k != "config"}
    # The queue validates the instrument argument against the one device it may name.
    return parameter_annotation_decorator(
        {"parameters": {"xrm": {"annotation": "Instrument", "devices": {"Instrument": ["xrm"]}}}})(bound)


xrm = connect_instrument(CONFIG)

RE = RunEngine({})
RE.subscribe(DocumentJournal(CONFIG.paths.journal_path))  # first: `nanoscope recover` if the worker dies
RE.subscribe(NXtomoWriter())
RE.subscribe(CatalogWriter.from_config(CONFIG))
RE.subscribe(Publisher(f"{CONFIG.server.host}:{CONFIG.server.documents_in_port}", prefix=RAW_PREFIX,
                       serializer=serialize))

globals().update({name: with_config(plan, CONFIG) for name, plan in PLANS.items()})
