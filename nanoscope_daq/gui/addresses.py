"""Where the console finds the instrument: the server's addresses and the IOCs' prefix and port."""

from __future__ import annotations

import dataclasses

from ..config import Config
from ..errors import RefusedInput

SERVER_KEYS = ("qserver", "zmq", "tiled")
"""The ready line's keys (DESIGN.md) the console needs."""


@dataclasses.dataclass(frozen=True)
class Addresses:
    """The queue's control socket, the documents' 0MQ address, the Tiled URI, the PV prefix and CA port."""

    qserver: str
    zmq: str
    tiled: str
    prefix: str
    ca_port: int

    @classmethod
    def from_config(cls, config: Config) -> Addresses:
        """The addresses a server started with ``config`` listens at."""
        server = config.server
        return cls(server.control_address, server.documents_address, server.tiled_uri, config.epics.prefix,
                   config.epics.port)

    def with_words(self, text: str) -> Addresses:
        """These addresses with the ``key=value`` words of ``text`` (a server's ready line) applied.

        ``ca=H:P`` sets the Channel Access port and ``prefix=P`` the PV prefix; other words are ignored.
        """
        words = dict(word.split("=", 1) for word in text.split() if "=" in word)
        unknown = [word for word in text.split() if "=" not in word and "ready" not in word and word != "nanoscope"
                   and word != "serve"]
        if unknown:
            raise RefusedInput(f"--server {text!r}: expected key=value words such as "
                               f"qserver=tcp://127.0.0.1:60615 zmq=tcp://127.0.0.1:60631 tiled=http://127.0.0.1:60600"
                               f" (the server's ready line), not {' '.join(unknown)!r}")
        changes: dict[str, object] = {key: words[key] for key in SERVER_KEYS if key in words}
        if "prefix" in words:
            changes["prefix"] = words["prefix"]
        if "ca" in words:
            changes["ca_port"] = int(words["ca"].rsplit(":", 1)[1])
        return dataclasses.replace(self, **changes)
