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


def serve_repeater() -> int:
    """A CA repeater for this process's clients, in a daemon thread, on a free port; returns the port.

    libca starts a ``caRepeater`` executable unless something already holds its repeater
    port, and without a repeater that confirms its registration it complains ("caRepeater
    couldn't be located", "unable to contact CA repeater after 50 tries"); pyepics ships no
    caRepeater for Linux. This one confirms every registration (libca on Linux registers
    with an empty datagram, which caproto's repeater records but never confirms) and
    forwards every other datagram (server beacons) to the registered clients. It ends with
    this process; servers started after this call inherit ``EPICS_CA_REPEATER_PORT`` and
    send it their beacons. Call before libca loads.
    """
    import socket
    import threading

    if "epics" in sys.modules:
        raise RuntimeError("pyepics was imported before the CA repeater was set up; call serve_repeater() first")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))  # libca tests the port on every interface
    port = sock.getsockname()[1]
    os.environ["EPICS_CA_REPEATER_PORT"] = str(port)
    threading.Thread(target=_repeat, args=(sock,), name="ca-repeater", daemon=True).start()
    return port


def _repeat(sock) -> None:
    """The repeater's loop: confirm registrations, forward the rest to the registered clients."""
    import caproto

    clients: set[tuple[str, int]] = set()
    broadcaster = caproto.Broadcaster(our_role=caproto.SERVER)
    while True:
        message, sender = sock.recvfrom(65536)
        commands = broadcaster.recv(message, sender) if message else []
        if not message or any(isinstance(c, caproto.RepeaterRegisterRequest) for c in commands):
            clients.add(sender)
            sock.sendto(broadcaster.send(caproto.RepeaterConfirmResponse(sender[0])), sender)
            continue
        for client in list(clients - {sender}):
            try:
                sock.sendto(message, client)
            except OSError:  # the client has gone
                clients.discard(client)
