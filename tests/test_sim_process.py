"""The simulator process: ready line, clean exit on signals, clear config errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nanoscope_daq.epics_env import free_port
from nanoscope_daq.sim.process import SimProcess


def test_ready_line_names_prefix_port_and_pid(sim_factory):
    sim = sim_factory.start()
    ready = [line for line in sim.output if "ready" in line]
    assert ready, list(sim.output)
    assert f"prefix={sim.prefix}" in ready[0]
    assert f"port={sim.port}" in ready[0]
    assert f"pid={sim.pid}" in ready[0]
    sim_factory.stop(sim)
    assert sim.proc.returncode == 0


def test_sigterm_exits_cleanly(tmp_path):
    import signal

    sim = SimProcess("TERM:", free_port(), data_dir=tmp_path).start()
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.proc.wait(10) == 0


def test_bad_option_is_refused_with_the_key_named():
    result = subprocess.run(
        [sys.executable, "-m", "nanoscope_daq", "sim", "--port", "80"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "epics.port" in result.stderr and "between 1024 and 65535" in result.stderr


def test_an_unusable_data_directory_is_refused_at_start_naming_why(tmp_path):
    """A file, a directory nobody may write in, and one that cannot be created (even as root: /proc)."""
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a directory")
    cases = ((a_file, "is a file, not a directory"), (Path("/proc/1"), "is not writable"),
             (Path("/proc/1/data"), "cannot be created"))
    for data_dir, words in cases:
        result = subprocess.run(
            [sys.executable, "-m", "nanoscope_daq", "sim", "--port", str(free_port()), "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr
        assert "ready" not in result.stdout
