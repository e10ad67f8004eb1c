"""Documents on 0MQ as JSON (never pickle: the socket may leave the machine)."""

from __future__ import annotations

import json

from ..documents import document_json


def serialize(doc: dict) -> bytes:
    """A document as UTF-8 JSON (numpy values as plain numbers and lists)."""
    return document_json(doc).encode()


def deserialize(data: bytes) -> dict:
    """The inverse of :func:`serialize`."""
    return json.loads(data)
