"""``nanoscope live``: the online reconstruction as a separate process, fed over 0MQ.

It subscribes to the server's document proxy (bluesky's ``RemoteDispatcher``, JSON), runs
the same streaming reconstruction as ``nanoscope scan`` runs in-process, and writes its
analysis run (``raw_run_uid`` of the scan) to the catalog. Nothing of record depends on it:
the NXtomo files and the raw runs in the catalog are written by the server's worker.
Killing it never disturbs a scan; started again, it picks up the next run it sees
(0MQ keeps nothing for a subscriber that was not connected).
"""

from __future__ import annotations

import signal

from ..config import Config
from .documents_socket import deserialize

READY_MARKER = "nanoscope live ready"


def run_live(config: Config) -> int:
    """Subscribe, reconstruct every tomogram announced, until SIGINT/SIGTERM."""
    import asyncio

    from bluesky.callbacks.zmq import RemoteDispatcher

    from ..pipeline.catalog import CatalogWriter
    from ..pipeline.streaming import StreamingReconstruction

    address = config.server.documents_address
    loop = asyncio.new_event_loop()
    dispatcher = RemoteDispatcher(address.removeprefix("tcp://"), loop=loop, deserializer=deserialize)
    catalog = CatalogWriter.from_config(config)
    online = StreamingReconstruction(config=config, publish=catalog,
                                     on_volume=lambda path: print(f"online volume: {path}", flush=True))
    dispatcher.subscribe(online)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # ends the dispatcher's loop; the finally below writes what is pending

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    print(f"{READY_MARKER}: documents from {address}, catalog {config.catalog.uri or 'embedded'}", flush=True)
    try:
        dispatcher.start()
    except KeyboardInterrupt:
        dispatcher.stop()
    finally:
        online.close()
        catalog.close()
    return 0
