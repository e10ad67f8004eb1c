"""The server's documents, read from its 0MQ proxy in a thread of their own (never the GUI thread).

Subscribes to both prefixes (docs/server.md): the scans' documents (``raw``) and the
analysis runs ``nanoscope live`` publishes (``analysis``). Each document is handed to
``callback(name, doc)`` in this thread; the callback turns what it needs into Qt signals.
0MQ keeps nothing for a subscriber that was not connected: a console started mid-scan
sees that scan from the next document on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import zmq

from ..server.documents_socket import deserialize

POLL_MS = 200
logger = logging.getLogger(__name__)


class DocumentsFeed:
    """Reads documents published at ``address`` (``tcp://H:P``) and passes each to ``callback``."""

    def __init__(self, address: str, callback: Callable[[str, dict], None]) -> None:
        self.address = address
        self.callback = callback
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="documents-feed", daemon=True)

    def start(self) -> None:
        """Connect and start reading."""
        self._thread.start()

    def _run(self) -> None:
        context = zmq.Context.instance()
        socket = context.socket(zmq.SUB)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.address)
        try:
            while not self._stop.is_set():
                if not socket.poll(POLL_MS):
                    continue
                _prefix, name, doc = socket.recv().split(b" ", 2)
                self.received += 1
                try:
                    self.callback(name.decode(), deserialize(doc))
                except Exception:  # noqa: BLE001 -- one document the console cannot show never stops the feed
                    logger.exception("the console could not show a %s document", name.decode())
        finally:
            socket.close()

    def stop(self) -> None:
        """Stop reading and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
