"""``nanoscope serve``: the instrument server, every part a child process started and stopped by PID.

Parts, in start order (each must answer before the next starts; stopped in reverse):

1. ``nanoscope sim`` (``--sim`` only): the simulated IOCs at the configured prefix and port.
2. Redis (Debian's ``redis-server``), its own data directory: the queue and its history.
3. Tiled (``tiled serve config``): the catalog, SQLite + SQL tables in the catalog
   directory, the data directory readable, a single-user API key.
4. bluesky's 0MQ proxy: the RunEngine publishes into its in side, subscribers read its out side.
5. The RE Manager (bluesky-queueserver) with :mod:`nanoscope_daq.server.startup` and an
   allowlist of the project's plans and the one instrument; its worker environment is
   opened before ``ready`` is printed, so the queue takes items at once.
6. ``nanoscope live`` (when ``server.live_analysis``): the online reconstruction, fed over 0MQ.

Everything binds ``server.host`` (127.0.0.1 unless configured otherwise).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import sys
import threading
from pathlib import Path

from ..child_process import ChildProcess, ChildProcessError
from ..config import Config, ConfigError, overrides_toml
from ..errors import RefusedInput
from ..sim.data_dir import check_data_dir

READY_MARKER = "ready"
REDIS_INSTALL_HINT = "install it with `apt-get install redis-server` (Debian; `make install` does it when run as root)"


class ServerStartError(RuntimeError):
    """A part of the server did not start; the message names it and why."""


def _tool(name: str) -> str:
    """An executable of this Python environment (console scripts of bluesky, tiled, queueserver)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def check_can_start(config: Config, *, sim: bool) -> None:
    """Refuse before starting anything: a taken port, a missing Redis, an unusable data directory."""
    server = config.server
    ports = {name: getattr(server, name) for name in ("redis_port", "control_port", "info_port",
                                                       "documents_in_port", "documents_out_port", "tiled_port")}
    if sim:
        ports["epics.port"] = config.epics.port
    for name, port in ports.items():
        if not _port_free(server.host, port):
            key = name if "." in name else f"server.{name}"
            raise RefusedInput(f"port {port} ({key}) on {server.host} is taken (another `nanoscope serve`?); "
                               f"stop what holds it or set another {key} in the configuration")
    if shutil.which("redis-server") is None:
        raise RefusedInput(f"redis-server is not installed; {REDIS_INSTALL_HINT}")
    check_data_dir(config.paths.data_path)


class InstrumentServer:
    """The server's parts for ``config`` (see the module docstring); :meth:`start`, then :meth:`stop`."""

    def __init__(self, config: Config, *, sim: bool = False) -> None:
        server = config.server
        if not config.catalog.uri:
            config = config.replace(catalog={"uri": server.tiled_uri})
        if config.catalog.uri != server.tiled_uri:
            raise ConfigError(f"catalog.uri = {config.catalog.uri!r} but the server's Tiled listens at "
                              f"{server.tiled_uri}; leave catalog.uri empty for `nanoscope serve`")
        self.config = config
        self.sim = sim
        self.directory = config.paths.data_path / "server"
        self.parts: list[ChildProcess] = []

    # -- the parts -------------------------------------------------------------------------------------------------
    def _write_files(self) -> Path:
        """The effective configuration, the Tiled configuration and the queue's allowlist."""
        from ..pipeline.catalog import catalog_storage
        from .permissions import permissions_yaml  # the plans (ophyd): not before check_can_start has passed

        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "redis").mkdir(exist_ok=True)
        config_path = self.directory / "config.toml"
        config_path.write_text(overrides_toml(dataclasses.asdict(self.config)))
        storage = catalog_storage(self.config)
        Path(storage["writable_storage"][0]).mkdir(parents=True, exist_ok=True)
        tiled = {
            "trees": [{"path": "/", "tree": "catalog", "args": storage}],
            "uvicorn": {"host": self.config.server.host, "port": self.config.server.tiled_port},
        }
        import yaml

        (self.directory / "tiled.yml").write_text(yaml.safe_dump(tiled))
        (self.directory / "user_group_permissions.yaml").write_text(permissions_yaml())
        return config_path

    def _env(self, config_path: Path) -> dict[str, str]:
        from ..epics_env import ca_client_env

        return {**os.environ, **ca_client_env([self.config.epics.port]), "NANOSCOPE_CONFIG": str(config_path),
                "TILED_SINGLE_USER_API_KEY": self.config.catalog.key()}

    def _redis(self, env: dict[str, str]) -> ChildProcess:
        server = self.config.server

        def pong() -> bool:
            import redis

            try:
                return bool(redis.Redis(host=server.host, port=server.redis_port, socket_timeout=0.5).ping())
            except redis.RedisError:
                return False

        return ChildProcess("redis-server", [
            "redis-server", "--bind", server.host, "--port", str(server.redis_port),
            "--dir", str(self.directory / "redis"), "--save", "60 1", "--appendonly", "no",
            "--protected-mode", "yes", "--daemonize", "no"], env=env, probe=pong, stop_signal=signal.SIGTERM,
            log=self.directory / "redis.log")

    def _tiled(self, env: dict[str, str]) -> ChildProcess:
        server = self.config.server

        def healthy() -> bool:
            import httpx

            try:
                return httpx.get(f"{server.tiled_uri}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        return ChildProcess("tiled", [_tool("tiled"), "serve", "config", str(self.directory / "tiled.yml")],
                            env=env, probe=healthy, stop_signal=signal.SIGINT, log=self.directory / "tiled.log")

    def _proxy(self, env: dict[str, str]) -> ChildProcess:
        server = self.config.server
        return ChildProcess("0MQ document proxy", [
            _tool("bluesky-0MQ-proxy"), "--in-address", f"{server.host}:{server.documents_in_port}",
            "--out-address", f"{server.host}:{server.documents_out_port}"], env=env,
            probe=lambda: _listening(server.host, server.documents_in_port)
            and _listening(server.host, server.documents_out_port),
            stop_signal=signal.SIGINT, log=self.directory / "zmq-proxy.log")

    def _manager(self, env: dict[str, str]) -> ChildProcess:
        server = self.config.server
        return ChildProcess("RE Manager", [
            _tool("start-re-manager"), "--startup-module", "nanoscope_daq.server.startup",
            "--existing-plans-devices", str(self.directory / "existing_plans_and_devices.yaml"),
            "--update-existing-plans-devices", "ENVIRONMENT_OPEN",
            "--user-group-permissions", str(self.directory / "user_group_permissions.yaml"),
            "--redis-addr", f"{server.host}:{server.redis_port}", "--redis-name-prefix", server.redis_name_prefix,
            "--zmq-control-addr", server.control_address, "--zmq-info-addr", server.info_address,
            "--zmq-publish-console", "ON", "--use-ipython-kernel", "OFF"], env=env,
            probe=lambda: _listening(server.host, server.control_port), stop_signal=signal.SIGINT,
            log=self.directory / "re-manager.log")

    def _live(self, env: dict[str, str], config_path: Path) -> ChildProcess:
        # --debug: its log file keeps the traceback of anything that goes wrong in the analysis
        return ChildProcess("nanoscope live", [sys.executable, "-m", "nanoscope_daq", "--debug", "live", "--config",
                                               str(config_path)], env=env, ready_marker="nanoscope live ready",
                            stop_signal=signal.SIGINT, log=self.directory / "live.log")

    def _open_environment(self) -> None:
        """Open the worker environment (it connects to the IOCs) and wait until the queue is idle."""
        from .queue_client import manager

        with manager(self.config) as api:
            status = api.status()
            if not status["worker_environment_exists"]:
                api.environment_open()
            try:
                api.wait_for_idle(timeout=self.config.server.start_timeout_s)
            except Exception as exc:  # noqa: BLE001 -- the API's timeout types vary; name the part instead
                raise ServerStartError(f"the RE Manager's worker environment did not open ({exc}); see "
                                       f"{self.directory / 're-manager.log'}") from None
            if not api.status()["worker_environment_exists"]:
                log = self.directory / "re-manager.log"
                raise ServerStartError(f"the RE Manager's worker environment failed to open (are the IOCs at "
                                       f"{self.config.epics.prefix} on port {self.config.epics.port} up?); "
                                       f"see {log}")


    def start(self) -> None:
        """Start every part in order; on any failure stop those started and raise naming the part."""
        check_can_start(self.config, sim=self.sim)
        config_path = self._write_files()
        env = self._env(config_path)
        timeout = self.config.server.start_timeout_s
        steps: list[ChildProcess] = []
        if self.sim:
            from ..sim.process import SimProcess

            steps.append(SimProcess(self.config.epics.prefix, self.config.epics.port,
                                    data_dir=self.config.paths.data_path, config=config_path))
        steps += [self._redis(env), self._tiled(env), self._proxy(env), self._manager(env)]
        self._live_command = lambda: self._live(env, config_path)
        try:
            for part in steps:
                self.parts.append(part)
                part.start(timeout)
            self._open_environment()
            if self.config.server.live_analysis:
                self._start_live()
        except ChildProcessError as exc:
            self.stop()
            raise ServerStartError(str(exc)) from None
        except BaseException:
            self.stop()
            raise

    def _start_live(self) -> None:
        live = self._live_command()
        self.parts.append(live)
        live.start(self.config.server.start_timeout_s)

    def supervise(self) -> str | None:
        """Restart the live analysis if it died (nothing of record depends on it); the name of any other
        part that exited, else None."""
        for part in list(self.parts):
            if part.running():
                continue
            if part.name != "nanoscope live":
                return f"{part.name} exited (code {part.proc.returncode})"
            print(f"nanoscope serve: nanoscope live exited (code {part.proc.returncode}); starting it again",
                  file=sys.stderr, flush=True)
            self.parts.remove(part)
            self._start_live()
        return None

    def addresses(self) -> dict[str, str]:
        """The ``key=value`` addresses of the ready line (DESIGN.md)."""
        server = self.config.server
        out = {"qserver": server.control_address, "qinfo": server.info_address,
               "zmq": server.documents_address, "tiled": server.tiled_uri}
        if self.sim:
            out.update(ca=f"127.0.0.1:{self.config.epics.port}", prefix=self.config.epics.prefix)
        return out

    def stop(self) -> None:
        """Stop every part started, in reverse order, each by its PID."""
        manager_running = any(part.name == "RE Manager" and part.running() for part in self.parts)
        if manager_running:
            self._stop_manager()
        for part in reversed(self.parts):
            part.stop()
        self.parts.clear()

    def _stop_manager(self) -> None:
        """Ask the RE Manager to close its worker (which releases the instrument), then stop it."""
        from .queue_client import manager

        try:
            with manager(self.config) as api:
                api.manager_stop(option="safe_off")
        except Exception:  # noqa: BLE001 -- falls back to stopping it by its PID
            return


def run(config: Config, *, sim: bool) -> int:
    """``nanoscope serve``: start, print the ready line, serve until SIGINT/SIGTERM, stop everything."""
    server = InstrumentServer(config, sim=sim)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    try:
        addresses = " ".join(f"{key}={value}" for key, value in server.addresses().items())
        print(f"nanoscope serve {READY_MARKER}: {addresses} pid={os.getpid()}", flush=True)
        while not stop.wait(1.0):
            failed = server.supervise()
            if failed is not None:
                print(f"nanoscope serve: {failed}; stopping everything", file=sys.stderr, flush=True)
                return 1
    finally:
        server.stop()
    return 0
