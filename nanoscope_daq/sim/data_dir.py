"""The camera's data directory of ``nanoscope sim`` and ``nanoscope serve``, checked before anything starts.

A module of its own, free of caproto and the simulator's physics, so that a bad
``--data-dir`` is refused in a fraction of a second.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import RefusedInput


def check_data_dir(path: Path) -> None:
    """The camera's data directory exists (it is created if missing), is a directory and is writable.

    Raises :class:`RefusedInput` naming which of the three fails, before any PV is served:
    a scan would otherwise fail only when it opens its file.
    """
    key = "paths.data_dir (--data-dir)"
    if path.exists() and not path.is_dir():
        raise RefusedInput(f"{key} {path} is a file, not a directory; give a directory, or move the file away")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefusedInput(f"{key} {path} does not exist and cannot be created ({exc.strerror or exc}); "
                           "create it, or give a directory you may write in") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise RefusedInput(f"{key} {path} is not writable by this process ({exc.strerror or exc}); "
                           "fix its permissions, or give another directory") from None
