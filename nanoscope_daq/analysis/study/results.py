"""Result files of the study's tasks: written atomically, found again when done.

A task writes its outputs under temporary names renamed into place (``atomic_path``),
its result JSON last: the JSON is the done-marker. ``done_result`` gives a stored result
back only when it records the same fingerprint (inputs and settings) as the task now.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def file_fingerprint(path: Path) -> dict[str, Any]:
    """An input file as it is now: path, size and modification time (a rewritten file differs)."""
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def done_result(path: Path, fingerprint: dict[str, Any]) -> dict | None:
    """The stored result at ``path`` if it was made from the same inputs and settings, else None."""
    try:
        result = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return result if result.get("fingerprint") == fingerprint else None


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write; renamed to ``path`` when the block succeeds, removed if not.

    Partial files of ``path`` left by a killed process are removed first (one task writes a path at a time).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.part"):
        stale.unlink(missing_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_result(path: Path, result: dict) -> None:
    """Write ``result`` as JSON at ``path`` atomically."""
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(result, indent=2, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
