"""``nanoscope live``: the online reconstruction as a separate process, fed over 0MQ.

It subscribes to the server's document proxy (bluesky's ``RemoteDispatcher``, JSON), runs
the same streaming reconstruction as ``nanoscope scan`` runs in-process, and writes its
analysis run (``raw_run_uid`` of the scan) to the catalog. Nothing of record depends on it:
the NXtomo files and the raw runs in the catalog are written by the server's worker.

Killing it never disturbs a scan, and 0MQ keeps nothing for a subscriber that was not
connected. So it **catches up from the catalog**: when it starts, every tomography run of
the last ``server.live_catch_up_hours`` without an analysis run, and while it runs, every
run whose end it sees without having seen its start, is reconstructed from the NXtomo
files the catalog links (the same reconstruction as ``nanoscope recon``), and its analysis
run written like the live one.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..config import Config
from .documents_socket import ANALYSIS_PREFIX, RAW_PREFIX, deserialize, serialize

READY_MARKER = "nanoscope live ready"
CATCH_UP_ANALYSIS = "catch_up_reconstruction"
CATALOG_WAIT_S = 120.0

logger = logging.getLogger(__name__)


class CatalogAndSocket:
    """Publishes each analysis document to the catalog and into the server's 0MQ proxy (for the console).

    The reconstruction and the catch-up publish from their own threads; a lock keeps the 0MQ
    socket to one thread at a time. The documents carry :data:`ANALYSIS_PREFIX`, so this
    process's own subscription (:data:`RAW_PREFIX`) never receives them back.
    """

    def __init__(self, config: Config, writer: Any) -> None:
        from bluesky.callbacks.zmq import Publisher

        server = config.server
        self.writer = writer
        self._publisher = Publisher(f"{server.host}:{server.documents_in_port}", prefix=ANALYSIS_PREFIX,
                                    serializer=serialize)
        self._lock = threading.Lock()

    def __call__(self, name: str, doc: dict) -> None:
        self.writer(name, doc)
        with self._lock:
            self._publisher(name, doc)

    def close(self) -> None:
        self._publisher.close()


class CatchUp:
    """Reconstructs, from their NXtomo files, the runs the live subscription missed (its own thread)."""

    def __init__(self, config: Config, catalog: Any, publish) -> None:
        self.config = config
        self.catalog = catalog
        self.publish = publish
        self.seen: set[str] = set()
        self.queued: set[str] = set()
        """Runs queued once: the start-up sweep and a stop that arrives later can name the same run, and the
        catalog may not show the first catch-up's stop yet when the second would begin (and rewrite its file)."""
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="catch-up", daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict) -> None:
        """Notes the runs whose start arrived; a stop of any other run is a run to catch up."""
        if name == "start":
            self.seen.add(doc["uid"])
        elif name == "stop" and doc["run_start"] not in self.seen:
            self._enqueue(doc["run_start"])

    def sweep(self) -> None:
        """Queue the recent tomography runs that have no analysis run yet."""
        from tiled.queries import Key

        since = time.time() - 3600 * self.config.server.live_catch_up_hours
        for uid, run in self.catalog.search(Key("start.time") > since).items():
            start = run.metadata["start"]
            if "geometry" in start and "raw_run_uid" not in start and not self._analysed(uid):
                self._enqueue(uid)

    def _enqueue(self, uid: str) -> None:
        if uid not in self.queued:
            self.queued.add(uid)
            self._queue.put(uid)

    def _analysed(self, uid: str) -> bool:
        """Whether an analysis run of ``uid`` finished (one cut off with the process that wrote it does not count)."""
        from tiled.queries import Key

        analyses = self.catalog.search(Key("start.raw_run_uid") == uid).values()
        return any(analysis.metadata.get("stop", {}).get("exit_status") == "success" for analysis in analyses)

    def _work(self) -> None:
        while (uid := self._queue.get()) is not None:
            try:
                self._catch_up(uid)
            except Exception:  # noqa: BLE001 -- one run that cannot be reconstructed does not stop the next
                logger.exception("catch-up reconstruction of run %s failed", uid)

    def _catch_up(self, uid: str) -> None:
        from ..pipeline.analysis_run import AnalysisRun
        from ..pipeline.catalog import table_rows
        from ..recon.offline import reconstruct_file

        deadline = time.monotonic() + CATALOG_WAIT_S
        while uid not in self.catalog or "stop" not in self.catalog[uid].metadata:  # the worker writes it
            if time.monotonic() > deadline:
                logger.warning("run %s never reached the catalog; not caught up", uid)
                return
            time.sleep(1.0)
        run = self.catalog[uid]
        if uid in self.seen or self._analysed(uid) or "tomograms" not in run:
            return  # seen: the sweep queued a run still under way whose start then reached the online path
        analysis = AnalysisRun(self.publish, run.metadata["start"], CATCH_UP_ANALYSIS,
                               {"reason": "the live subscription missed this run"})
        for row in table_rows(run["tomograms"]):
            nxs = Path(row["nxtomo_file"])
            volume = nxs.with_name(nxs.stem + "_recon.h5")
            reconstruct_file(nxs, volume, settings=self.config.recon)
            analysis.event("volumes", {"volume_file": str(volume), "volume_dataset": "/volume",
                                       "tomogram": int(row["tomogram"]), "time_point": int(row["time_point"]),
                                       "selection": "all", "nxtomo_file": str(nxs)})
            print(f"caught up: {volume}", flush=True)
        analysis.stop()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def run_live(config: Config) -> int:
    """Subscribe, reconstruct every tomogram announced, catch up what was missed, until SIGINT/SIGTERM."""
    import asyncio

    from bluesky.callbacks.zmq import RemoteDispatcher

    from ..pipeline.catalog import CatalogWriter, open_catalog
    from ..pipeline.streaming import StreamingReconstruction

    address = config.server.documents_address
    loop = asyncio.new_event_loop()
    dispatcher = RemoteDispatcher(address.removeprefix("tcp://"), loop=loop, prefix=RAW_PREFIX,
                                  deserializer=deserialize)
    writer = CatalogWriter.from_config(config)
    publish = CatalogAndSocket(config, writer)
    online = StreamingReconstruction(config=config, publish=publish,
                                     on_volume=lambda path: print(f"online volume: {path}", flush=True))
    catch_up = CatchUp(config, open_catalog(config), publish)
    dispatcher.subscribe(online)
    dispatcher.subscribe(catch_up)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # ends the dispatcher's loop; the finally below writes what is pending

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    print(f"{READY_MARKER}: documents from {address}, catalog {config.catalog.uri or 'embedded'}", flush=True)
    catch_up.sweep()
    try:
        dispatcher.start()
    except KeyboardInterrupt:
        dispatcher.stop()
    finally:
        online.close()
        catch_up.close()
        writer.close()
        publish.close()
    return 0
