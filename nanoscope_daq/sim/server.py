"""Serve every simulated IOC from one process on 127.0.0.1 and one CA port."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from caproto.server import PVGroup

from ..config import Config
from ..epics_env import ca_server_env
from .ioc.camera import camera_iocs
from .ioc.description import DescriptionIOC
from .ioc.loadcell import LoadCellIOC
from .ioc.motor import MotorRecordIOC
from .ioc.physiology import PhysiologyIOC
from .ioc.pso import PsoIOC
from .ioc.simcontrol import SimControlIOC
from .ioc.source import SourceIOC
from .ioc.watchdog import WatchdogIOC
from .world import World

READY_MARKER = "ready"
MAX_MONITOR_LATENCY_S = 0.02


def build_iocs(world: World) -> list[PVGroup]:
    """One PV group per device, each under the instrument prefix (DESIGN.md names)."""
    prefix = world.config.epics.prefix
    groups: list[PVGroup] = [
        MotorRecordIOC(prefix + name.upper(), axis) for name, axis in world.axes.items()
    ]
    groups.append(SourceIOC(prefix + "SRC:", world.source))
    groups.append(LoadCellIOC(prefix + "LOAD:", world.loadframe))
    groups.append(PhysiologyIOC(prefix + "PHYS:", world.physiology))
    pso = PsoIOC(prefix + "ROT:PSO:", world.axes["rot"])
    groups.append(pso)
    camera = camera_iocs(prefix + "CAM:", world, trigger_input=pso.output)
    groups += camera
    groups.append(DescriptionIOC(prefix + "INST:", world.config.geometry))
    groups.append(SimControlIOC(prefix + "SIM:", world, camera=camera[0]))
    groups.append(WatchdogIOC(prefix + "WD:", merged_pvdb(groups), safe_state(prefix),
                              timeout_s=world.config.epics.heartbeat_timeout_s))
    return groups


def safe_state(prefix: str) -> list[tuple[str, object]]:
    """What the watchdog writes, in order, when the controlling client's heartbeat lapses."""
    return [
        (prefix + "SRC:SHUTTER", "Close"), (prefix + "ROT:PSO:DISARM", 1), (prefix + "ROT.STOP", 1),
        (prefix + "CAM:cam1:Acquire", "Done"), (prefix + "CAM:HDF1:Capture", "Done"),
    ]


def merged_pvdb(groups: list[PVGroup]) -> dict:
    """All groups' PVs in one database; a name served twice is a configuration bug."""
    pvdb: dict = {}
    for group in groups:
        clash = pvdb.keys() & group.pvdb.keys()
        if clash:
            raise ValueError(f"PV names served twice: {sorted(clash)[:5]}")
        pvdb.update(group.pvdb)
    return pvdb


async def _initialize(groups: list[PVGroup]) -> None:
    """Write config-derived initial values before any client can connect."""
    for group in groups:
        init = getattr(group, "initialize", None)
        if init is not None:
            await init()


class _ConciseCaprotoLog(logging.Filter):
    """One line, no traceback, for what caproto logs as exceptions but is normal here.

    A refused put (the IOC's putter raised with its reason) is the IOC working as
    designed, and beacons that reach no CA repeater do not stop any client connecting;
    caproto logs both with a full traceback, which reads to an operator as a crash.
    """

    def __init__(self) -> None:
        super().__init__()
        self._beacon_warned = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Invalid write request") and record.exc_info:
            record.msg, record.args = "put refused: %s", (record.exc_info[1],)
            record.exc_info = None
        elif message.startswith("Failed to send beacon"):
            if self._beacon_warned:
                return False
            self._beacon_warned = True
            record.msg, record.args, record.exc_info = (
                "no CA repeater listens for beacons on this host; clients connect all the same", (), None,
            )
        return True


def _quiet_caproto_logging() -> None:
    concise = _ConciseCaprotoLog()
    for name in ("caproto.circ", "caproto.ctx"):
        logging.getLogger(name).addFilter(concise)


async def serve(config: Config, announce: Callable[[str], None]) -> None:
    """Run the IOCs until cancelled; ``announce`` receives the ready line."""
    from caproto.asyncio.server import Context
    from caproto.server import common as caproto_server

    # caproto batches monitor updates closer than 10 ms apart and lets the batch latency grow
    # to 1 s; motor readbacks are published at 200 Hz, so cap it to keep monitors live.
    caproto_server.MAX_LATENCY = min(caproto_server.MAX_LATENCY, MAX_MONITOR_LATENCY_S)

    _quiet_caproto_logging()
    world = World.from_config(config)
    groups = build_iocs(world)
    pvdb = merged_pvdb(groups)
    await _initialize(groups)

    async def on_started(async_lib) -> None:
        announce(
            f"nanoscope sim {READY_MARKER}: prefix={config.epics.prefix} "
            f"port={config.epics.port} pvs={len(pvdb)} pid={os.getpid()}"
        )

    ctx = Context(pvdb, interfaces=["127.0.0.1"])
    await ctx.run(startup_hook=on_started)


def run(config: Config) -> int:
    """Blocking entry point of ``nanoscope sim``, its data directory checked (``data_dir.check_data_dir``);
    exits 0 on SIGINT or SIGTERM."""
    os.environ.update(ca_server_env(config.epics.port))

    def announce(line: str) -> None:
        print(line, flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await serve(config, announce)
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    print("nanoscope sim stopped", file=sys.stderr, flush=True)
    return 0
