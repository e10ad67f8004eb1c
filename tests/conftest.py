"""Fixtures: simulated IOCs on loopback ports of this test session alone.

The Channel Access environment is set here, at import, before any test module
imports ophyd or epics: libca reads it once. A pool of free ports is chosen up front
and listed in EPICS_CA_ADDR_LIST; each simulator takes one port of the pool and a
unique prefix, and is stopped by its PID.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from nanoscope_daq.epics_env import configure_client, free_ports

PORT_POOL = free_ports(8)
configure_client(PORT_POOL)
os.environ["EPICS_CA_REPEATER_PORT"] = str(free_ports(1)[0])
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import psutil  # noqa: E402
import pytest  # noqa: E402
from caproto.sync import client as caproto_sync  # noqa: E402

from nanoscope_daq.config import load_config, overrides_toml  # noqa: E402
from nanoscope_daq.physics.presets import tiny_leg_overrides  # noqa: E402
from nanoscope_daq.sim.process import SimProcess  # noqa: E402

CAError = caproto_sync.ErrorResponseReceived


def ca_read(pvname: str, **kwargs):
    """caproto's blocking read, without the CA repeater its default spawns (it would outlive the tests)."""
    return caproto_sync.read(pvname, repeater=False, **kwargs)


def ioc_get(pvname: str):
    """A PV's value by a raw CA read: a number, or a str for enums, strings and char waveforms."""
    data = ca_read(pvname, timeout=5).data
    if getattr(data, "dtype", None) == "uint8":  # char waveform
        return bytes(data).rstrip(b"\0").decode()
    value = data[0]
    return value.decode() if isinstance(value, bytes) else value


def ca_write(pvname: str, value, **kwargs):
    """caproto's blocking write, without the CA repeater its default spawns (it would outlive the tests)."""
    return caproto_sync.write(pvname, value, repeater=False, **kwargs)


@pytest.fixture(autouse=True)
def _torch_threads(request):
    """Tests marked ``torch_threads(n)`` run torch on n threads: fixed for reproducible timing and no
    oversubscription of CI's two cores (torch is imported only for them)."""
    marker = request.node.get_closest_marker("torch_threads")
    if marker is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(marker.args[0])
    yield
    torch.set_num_threads(previous)


# Fast enough for tests, slow enough that ramps and holds are still observable.
TEST_TIME_SCALE = 50.0

_session_tag = uuid.uuid4().hex[:6].upper()
_counter = itertools.count()


class SimFactory:
    """Starts simulators on free ports of the pool; stops every one at teardown."""

    def __init__(self, data_root) -> None:
        self.free = list(PORT_POOL)
        self.running: list[SimProcess] = []
        self.data_root = data_root

    @staticmethod
    def next_prefix() -> str:
        return f"T{_session_tag}{next(_counter)}:"

    def data_dir(self, prefix: str):
        return self.data_root / prefix.rstrip(":")

    def start(self, *, time_scale: float = TEST_TIME_SCALE, prefix: str | None = None, **kwargs) -> SimProcess:
        if not self.free:
            raise RuntimeError("all ports of the test pool are in use; stop a simulator first")
        prefix = prefix or self.next_prefix()
        data_dir = self.data_dir(prefix)
        sim = SimProcess(prefix, self.free.pop(0), data_dir=data_dir, time_scale=time_scale, **kwargs)
        try:
            sim.start()
        except Exception:
            self.free.append(sim.port)
            raise
        self.running.append(sim)
        return sim

    def stop(self, sim: SimProcess) -> None:
        sim.stop()
        self.running.remove(sim)
        self.free.append(sim.port)

    def stop_all(self) -> None:
        for sim in list(self.running):
            self.stop(sim)


@pytest.fixture(scope="session")
def sim_factory(tmp_path_factory):
    factory = SimFactory(tmp_path_factory.mktemp("sim-data"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def sim(sim_factory):
    """One simulator shared by the tests of a module (non-destructive tests)."""
    process = sim_factory.start()
    yield process
    sim_factory.stop(process)


@pytest.fixture
def fresh_sim(sim_factory):
    """A simulator of the test's own, for tests that trip, break or fail something."""
    process = sim_factory.start()
    yield process
    sim_factory.stop(process)


def connected(device, timeout: float = 20.0):
    """``device`` once every signal it has is connected over Channel Access."""
    device.wait_for_connection(timeout=timeout)
    return device


def wait_until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def connected_instrument(prefix: str):
    from nanoscope_daq.devices import Instrument

    return connected(Instrument(prefix, name="xrm"))


@pytest.fixture(scope="module")
def xrm(sim):
    """The Instrument connected to the module's simulator."""
    return connected_instrument(sim.prefix)


@pytest.fixture
def fresh_xrm(fresh_sim):
    """The Instrument connected to a simulator of the test's own."""
    return connected_instrument(fresh_sim.prefix)


# -- scans: the tiny leg on a small detector, so projections render in milliseconds --------

SCAN_OVERRIDES = {
    "scan": {"darks": 4, "flats": 4, "flats_offset_mm": 0.5},
}


class DocumentLog:
    """Documents received, as (name, doc) in ``docs``; looked up by name and by stream."""

    docs: list[tuple[str, dict]]

    def named(self, name: str) -> list[dict]:
        return [doc for n, doc in self.docs if n == name]

    def events(self, stream: str) -> list[dict]:
        descriptors = {d["uid"] for d in self.named("descriptor") if d["name"] == stream}
        return [e for e in self.named("event") if e["descriptor"] in descriptors]

    def data(self, stream: str) -> list[dict]:
        """The ``data`` of each event of ``stream``."""
        return [event["data"] for event in self.events(stream)]


class ScanBench(DocumentLog):
    """A simulator with the tiny leg, its Instrument (source warm), a RunEngine and the documents it emitted."""

    def __init__(self, sim: SimProcess, config_path) -> None:
        from bluesky import RunEngine

        from nanoscope_daq.config import load_config
        from nanoscope_daq.pipeline import NXtomoWriter

        self.sim = sim
        self.config_path = config_path
        self.xrm = connected_instrument(sim.prefix)
        self.config = load_config(config_path)
        self.xrm.source.warm_up().wait(60)
        self.RE = RunEngine({}, call_returns_result=True)
        self.docs: list[tuple[str, dict]] = []
        self.RE.subscribe(lambda name, doc: self.docs.append((name, doc)))
        self.nxtomo = NXtomoWriter()
        self.RE.subscribe(self.nxtomo)

    def run(self, plan):
        self.docs.clear()
        return self.RE(plan)



def start_tiny_sim(sim_factory, tmp_path_factory) -> tuple[SimProcess, Path]:
    """A fresh simulator imaging the tiny leg (source cold), and the configuration file clients share with it."""
    from nanoscope_daq.config import overrides_toml
    from nanoscope_daq.physics.presets import tiny_leg_overrides

    root = tmp_path_factory.mktemp("scan")
    config_path = root / "tiny.toml"
    prefix = sim_factory.next_prefix()
    overrides = {
        **tiny_leg_overrides(), **SCAN_OVERRIDES,
        "paths": {"data_dir": str(sim_factory.data_dir(prefix))}, "dose": {"ledger_path": str(root / "dose.sqlite")},
    }
    config_path.write_text(overrides_toml(overrides))
    return sim_factory.start(config=config_path, prefix=prefix), config_path


def _scan_bench(sim_factory, tmp_path_factory) -> ScanBench:
    return ScanBench(*start_tiny_sim(sim_factory, tmp_path_factory))


@pytest.fixture(scope="module")
def scan_bench(sim_factory, tmp_path_factory):
    """A scan-ready simulated instrument shared by a module's tests."""
    bench = _scan_bench(sim_factory, tmp_path_factory)
    yield bench
    sim_factory.stop(bench.sim)


@pytest.fixture
def fresh_scan_bench(sim_factory, tmp_path_factory):
    """A scan-ready simulated instrument of the test's own (trips, failures)."""
    bench = _scan_bench(sim_factory, tmp_path_factory)
    yield bench
    sim_factory.stop(bench.sim)


# -- the instrument server: `nanoscope serve --sim` in a child process ------------------------

class Server:
    """``nanoscope serve --sim`` in a child process, its configuration, and its ready line's addresses."""

    def __init__(self, root: Path, ca_port: int, extra: dict | None = None) -> None:
        ports = [ca_port, *free_ports(6)]  # the CA port from the pool this session's clients search
        self.config_path = root / "server.toml"
        overrides = {
            **tiny_leg_overrides(), **SCAN_OVERRIDES,
            "epics": {"prefix": f"SRV{os.getpid()}:", "port": ports[0]},
            "paths": {"data_dir": str(root / "data")},
            "dose": {"ledger_path": str(root / "dose.sqlite")},
            "server": {"redis_port": ports[1], "control_port": ports[2], "info_port": ports[3],
                       "documents_in_port": ports[4], "documents_out_port": ports[5], "tiled_port": ports[6],
                       "redis_name_prefix": f"test_{os.getpid()}_{int(time.time())}"},
        }
        overrides["sim"] = {**overrides["sim"], "time_scale": 50.0}  # the tiny leg's phantom kept
        for section, values in (extra or {}).items():
            overrides[section] = {**overrides.get(section, {}), **values}
        self.config_path.write_text(overrides_toml(overrides))
        self.config = load_config(self.config_path, environment=False)
        self.ports = ports
        self.proc = subprocess.Popen([sys.executable, "-m", "nanoscope_daq", "serve", "--sim", "--config",
                                      str(self.config_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        for line in self.proc.stdout:  # the server gives up itself after server.start_timeout_s per part
            self.lines.append(line.rstrip())
            if "nanoscope serve ready" in line:
                break
        assert any("nanoscope serve ready" in line for line in self.lines), "\n".join(self.lines)
        self.ready = dict(word.split("=", 1) for word in self.lines[-1].split() if "=" in word)

    def child(self, marker: str) -> psutil.Process | None:
        """The one process of the server whose command line holds ``marker`` (None when not exactly one)."""
        found = []
        for process in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if marker in " ".join(process.cmdline()):
                    found.append(process)
            except psutil.Error:  # exited (or a zombie not reaped yet): not a running part
                continue
        return found[0] if len(found) == 1 else None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nanoscope_daq", *args, "--config", str(self.config_path)],
                              capture_output=True, text=True, timeout=timeout)

    def api(self):
        from bluesky_queueserver_api.zmq import REManagerAPI

        return REManagerAPI(zmq_control_addr=self.ready["qserver"], timeout_recv=10)

    def catalog(self):
        from tiled.client import from_uri

        return from_uri(self.ready["tiled"], api_key=self.config.catalog.key())

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def server_overrides() -> dict:
    """Configuration sections a test module adds to its server's (override this fixture in the module)."""
    return {}


@pytest.fixture(scope="module")
def server(tmp_path_factory, sim_factory, server_overrides):
    """``nanoscope serve --sim`` for the module's tests: the tiny leg, ports and a Redis prefix of its own."""
    ca_port = sim_factory.free.pop(0)
    try:
        srv = Server(tmp_path_factory.mktemp("server"), ca_port, server_overrides)
        yield srv
        if srv.proc.poll() is None:
            srv.stop()
    finally:
        sim_factory.free.append(ca_port)


def wait_state(api, condition, timeout: float, what: str) -> dict:
    """Poll the RE Manager's status until ``condition(status)``; fail the test naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.status()
        if condition(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"server never reached: {what}; last status {status}")
