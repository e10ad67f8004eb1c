"""Channel Access environment for clients: loopback only, one port.

libca reads ``EPICS_CA_*`` once, when pyepics loads it, so these must be set before
``epics`` or ``ophyd`` is imported; :func:`configure_client` refuses otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable


def ca_client_env(ports: Iterable[int], host: str = "127.0.0.1") -> dict[str, str]:
    """Environment that makes a CA client search only ``host`` on ``ports``."""
    return {
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": " ".join(f"{host}:{port}" for port in ports),
        "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024),
    }


def ca_server_env(port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """Environment that makes a caproto server listen only on ``host:port``."""
    return {
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_INTF_ADDR_LIST": host,
        "EPICS_CAS_BEACON_ADDR_LIST": host,
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        # Beacons go to this host's repeater port, the one the clients of this session use.
        "EPICS_CAS_BEACON_PORT": os.environ.get("EPICS_CA_REPEATER_PORT", "5065"),
        "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024),
    }


def configure_client(ports: Iterable[int], host: str = "127.0.0.1") -> None:
    """Point this process's CA client at ``host:ports``; must run before libca loads."""
    env = ca_client_env(ports, host)
    if "epics" in sys.modules and any(os.environ.get(k) != v for k, v in env.items()):
        raise RuntimeError(
            "pyepics was imported before the Channel Access environment was set; "
            "call nanoscope_daq.epics_env.configure_client() before importing ophyd or epics"
        )
    os.environ.update(env)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` (CA uses both on the same number)."""
    import socket

    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no port free for both TCP and UDP on {host}")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports, each free for both TCP and UDP on ``host`` (see :func:`free_port`)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports
