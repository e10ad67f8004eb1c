"""Documents on 0MQ as JSON (never pickle: the socket may leave the machine)."""

from __future__ import annotations

import json

from event_model import sanitize_doc

RAW_PREFIX = b"raw"
"""0MQ message prefix of the RunEngine's documents (the scans): ``nanoscope live`` subscribes to these only."""
ANALYSIS_PREFIX = b"analysis"
"""0MQ message prefix of the analysis runs ``nanoscope live`` publishes (live slices, volumes) for the console."""


def serialize(doc: dict) -> bytes:
    """A document as UTF-8 JSON (numpy values made plain by event-model's ``sanitize_doc``)."""
    return json.dumps(sanitize_doc(doc)).encode()


def deserialize(data: bytes) -> dict:
    """The inverse of :func:`serialize`."""
    return json.loads(data)
