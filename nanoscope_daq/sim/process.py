"""Run ``nanoscope sim`` as a child process: start, wait for ready, stop by PID.

Shared by the test fixtures, the demo and the benchmarks so all of them start and
stop the simulated instrument the same way.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .server import READY_MARKER


class SimProcessError(RuntimeError):
    """The simulator did not start, or died."""


class SimProcess:
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
        self.argv = [sys.executable, "-m", "nanoscope_daq", "sim", *args, *extra_args]
        self.proc: subprocess.Popen | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=500)
        self._ready = threading.Event()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise SimProcessError("simulator not started")
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))
            if READY_MARKER in line and "nanoscope sim" in line:
                self._ready.set()

    def start(self, timeout: float = 60.0) -> SimProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=Path.cwd(),
        )
        threading.Thread(target=self._drain, name=f"sim-{self.port}-output", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SimProcessError(
                    f"nanoscope sim on port {self.port} did not become ready:\n" + "\n".join(self.output)
                )
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout)

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
