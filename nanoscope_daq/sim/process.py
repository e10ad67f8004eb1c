"""Run ``nanoscope sim`` as a child process: start, wait for ready, stop by PID.

Shared by the test fixtures, the demo, the benchmarks and ``nanoscope serve --sim`` so all
of them start and stop the simulated instrument the same way.
"""

from __future__ import annotations

import os
import sys

from ..child_process import ChildProcess
from .server import READY_MARKER


class SimProcess(ChildProcess):
    """``nanoscope sim`` in a child process on 127.0.0.1:``port``."""

    def __init__(
        self,
        prefix: str,
        port: int,
        *,
        data_dir: str | os.PathLike | None = None,
        time_scale: float | None = None,
        seed: int | None = None,
        extra_args: tuple[str, ...] = (),
        config: str | os.PathLike | None = None,
    ) -> None:
        self.prefix = prefix
        self.port = port
        args = ["--prefix", prefix, "--port", str(port)]
        if data_dir is not None:
            args += ["--data-dir", str(data_dir)]
        if time_scale is not None:
            args += ["--time-scale", str(time_scale)]
        if seed is not None:
            args += ["--seed", str(seed)]
        if config is not None:
            args += ["--config", str(config)]
        super().__init__(f"nanoscope sim on port {port}", [sys.executable, "-m", "nanoscope_daq", "sim", *args,
                                                           *extra_args],
                         ready_marker=f"nanoscope sim {READY_MARKER}")
