"""Documents on 0MQ as JSON (never pickle: the socket may leave the machine)."""

from __future__ import annotations

import json

from event_model import sanitize_doc


def serialize(doc: dict) -> bytes:
    """A document as UTF-8 JSON (numpy values made plain by event-model's ``sanitize_doc``)."""
    return json.dumps(sanitize_doc(doc)).encode()


def deserialize(data: bytes) -> dict:
    """The inverse of :func:`serialize`."""
    return json.loads(data)
