"""Worker processes of the simulator end with it, however it ends (SIGKILL included).

A ``spawn``-ed worker outlives a parent killed with SIGKILL: nothing runs in the
parent to stop it, and the process is re-parented. Each worker therefore watches its
parent itself and exits when it is gone.
"""

from __future__ import annotations

import os
import threading

PARENT_POLL_S = 0.5


def exit_with_parent() -> None:
    """Call first thing in a worker process: it exits within ``PARENT_POLL_S`` once its parent has died."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
