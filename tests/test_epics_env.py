"""The demo's CA repeater: libca's empty registration datagram is confirmed, and beacons reach registered clients."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import socket, caproto
from nanoscope_daq.epics_env import serve_repeater
port = serve_repeater()
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.bind(("127.0.0.1", 0))
client.settimeout(5)
client.sendto(b"", ("127.0.0.1", port))  # libca on Linux registers with an empty datagram
reply = caproto.Broadcaster(our_role=caproto.CLIENT).recv(client.recvfrom(1024)[0], ("127.0.0.1", port))
print(type(reply[0]).__name__)
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
beacon = bytes(caproto.Beacon(13, 5064, 1, "127.0.0.1"))
server.sendto(beacon, ("127.0.0.1", port))
print(client.recvfrom(1024)[0] == beacon)
"""


def test_the_repeater_confirms_libcas_empty_registration_and_forwards_beacons():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["RepeaterConfirmResponse", "True"]
