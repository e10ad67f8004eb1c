"""A child process started, waited for and stopped by its PID (the simulator, the server's parts).

Its output is drained by a thread into a bounded buffer (so a chatty child never blocks
on a full pipe) and, when given, a log file. It is ready when a line contains
``ready_marker`` or when ``probe()`` answers; stopping sends ``stop_signal``, then
SIGKILL after a timeout.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ChildProcessError(RuntimeError):
    """A child did not start, or died before it was ready."""


class ChildProcess:
    """``argv`` as a child process named ``name`` (used in every message about it)."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 ready_marker: str | None = None, probe: Callable[[], bool] | None = None,
                 log: Path | None = None, stop_signal: int = signal.SIGINT) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.ready_marker = ready_marker
        self.probe = probe
        self.log = log
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=500)
        self.ready_line: str | None = None
        """The line that contained ``ready_marker`` (later lines may follow it in ``output``)."""
        self._ready = threading.Event()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ChildProcessError(f"{self.name} not started")
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        log = open(self.log, "a") if self.log is not None else None  # noqa: SIM115 -- closed below
        try:
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
                if log is not None:
                    log.write(line)
                    log.flush()
                if self.ready_marker is not None and self.ready_marker in line and not self._ready.is_set():
                    self.ready_line = line.rstrip("\n")
                    self._ready.set()
        finally:
            if log is not None:
                log.close()

    def _answers(self) -> bool:
        if self._ready.is_set():
            return True
        if self.probe is not None and self.probe():
            self._ready.set()
        return self._ready.is_set()

    def start(self, timeout: float = 60.0) -> ChildProcess:
        """Start the child and wait until it is ready; stops it and raises when it is not within ``timeout``."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=self.env, cwd=Path.cwd())
        threading.Thread(target=self._drain, name=f"{self.name}-output", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                died = self.proc.poll() is not None
                self.stop()
                last = "\n".join(list(self.output)[-15:])
                raise ChildProcessError(f"{self.name} {'exited' if died else f'did not answer within {timeout:g} s'}"
                                        f" before it was ready" + (f"; its last output:\n{last}" if last else ""))
            time.sleep(0.05)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """``stop_signal``, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, self.stop_signal)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout)

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
