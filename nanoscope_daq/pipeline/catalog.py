"""Every run's documents into the Tiled catalog: bluesky's ``TiledWriter``, off the RunEngine's thread.

The catalog is written by :class:`bluesky.callbacks.tiled_writer.TiledWriter` (pinned with
bluesky). Two things sit around it:

- **Frames stay where the camera wrote them.** A camera file holds a run's darks, flats and
  projections in acquisition order, and each stream announces absolute frame indices of
  that file (docs/documents.md). Tiled's stock HDF5 view maps a stream's rows to a whole
  dataset, so the catalog receives the camera file's ``stream_resource`` documents under
  :data:`FRAME_ROWS_MIMETYPE`: ``catalog_tiled.FrameRowsConsolidator`` (registered with
  bluesky's ``CONSOLIDATOR_REGISTRY``, the documented extension point) records which rows of
  the file each stream owns, and the server reads exactly those rows with
  :class:`~nanoscope_daq.pipeline.frame_rows_adapter.FrameRowsAdapter`. Nothing is copied.
- **A catalog that is down never holds up a scan.** :class:`CatalogWriter` hands documents
  to a thread; when writing a run to Tiled fails, the run's documents so far and every later
  one go to a backup journal (:class:`~nanoscope_daq.pipeline.journal.DocumentJournal`, the
  scans' own journal format), and the writer does not try that run again.
  ``nanoscope catalog ingest FILE`` puts a backup, or a scan's journal, in later.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from event_model import RunRouter

from ..config import Config
from .frame_ranges import FrameSet
from .journal import DocumentJournal, read_journal

logger = logging.getLogger(__name__)

CAMERA_FILE_MIMETYPE = "application/x-hdf5"
FRAME_ROWS_MIMETYPE = "application/x-hdf5-frame-rows"
"""The catalog's name for a camera-file dataset of which a stream owns some rows (absolute frame indices)."""

Document = tuple[str, dict]


def format_rows(frames: FrameSet) -> str:
    """Frames 0..4 and 9..12 as ``"0:4,9:12"`` (the adapter's ``rows`` parameter)."""
    return ",".join(f"{block.start}:{block.stop}" for block in frames.blocks())


def parse_rows(rows: str) -> list[tuple[int, int]]:
    """``"0:4,9:12"`` as ``[(0, 4), (9, 12)]``."""
    ranges = []
    for part in rows.split(","):
        start, stop = part.split(":")
        ranges.append((int(start), int(stop)))
    return ranges


def tiled_writer(client, batch_size: int):
    """bluesky's ``TiledWriter`` with the catalog's patches (frame rows, NXtomo links, previews left out).

    Made by :mod:`.catalog_tiled`, imported here only when a writer is made: importing Tiled's client
    takes over a second, which a scan refused before its first document should not pay.
    """
    from .catalog_tiled import patched_tiled_writer

    return patched_tiled_writer(client, batch_size)


def table_rows(node) -> list[dict[str, Any]]:
    """The rows of a stream's event table (e.g. a run's ``tomograms``) as plain dicts, in order."""
    table = node.read()
    columns = {name: table[name].values for name in table.data_vars}
    count = len(next(iter(columns.values()))) if columns else 0
    return [{name: values[i].item() if hasattr(values[i], "item") else values[i] for name, values in columns.items()}
            for i in range(count)]


def catalog_storage(config: Config) -> dict[str, Any]:
    """The arguments of ``tiled.catalog.from_uri`` for the instrument's catalog.

    SQLite catalog and SQL tabular storage in the catalog directory, the data directory
    registered as readable (camera files, NXtomo files, volumes are linked, never copied).
    The embedded catalog and ``nanoscope serve``'s Tiled use the same.
    """
    directory = config.catalog.path(config.paths.data_path).resolve()
    return {
        "uri": f"sqlite:///{directory / 'catalog.db'}",
        "writable_storage": [str(directory / "arrays"), f"sqlite:///{directory / 'tables.db'}"],
        "readable_storage": [str(config.paths.data_path.resolve())],
        "init_if_not_exists": True,
        "adapters_by_mimetype": {
            FRAME_ROWS_MIMETYPE: "nanoscope_daq.pipeline.frame_rows_adapter:FrameRowsAdapter"},
    }


def open_catalog(config: Config):
    """A Tiled client of the instrument's catalog: the server at ``catalog.uri``, or the embedded one."""
    from tiled.client import from_context, from_uri

    if config.catalog.uri:
        return from_uri(config.catalog.uri, api_key=config.catalog.key())
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client.context import Context
    from tiled.server.app import build_app

    storage = catalog_storage(config)
    directory = Path(storage["writable_storage"][0]).parent
    directory.mkdir(parents=True, exist_ok=True)
    adapter = catalog_from_uri(storage.pop("uri"), **storage)
    return from_context(Context.from_app(build_app(adapter)))


def backup_directory(config: Config) -> Path:
    """Where runs the catalog could not take are kept as JSON Lines until ``nanoscope catalog ingest``."""
    return config.catalog.path(config.paths.data_path) / "backup"


class _RunFeed:
    """One run into the catalog; after the first failure, into the backup file instead (never retried)."""

    def __init__(self, write: Callable[[str, dict], None], backup: Path) -> None:
        self.write = write
        self.backup = backup
        self.buffer: list[Document] = []
        self.failed: DocumentJournal | None = None

    def __call__(self, name: str, doc: dict) -> None:
        if self.failed is None:
            self.buffer.append((name, doc))
            try:
                self.write(name, doc)
            except Exception as exc:  # noqa: BLE001 -- any catalog failure sends the run to the backup
                self._fail(exc, doc)
                return
            if name == "stop":
                self.buffer.clear()
            return
        self.failed(name, doc)

    def _fail(self, exc: Exception, doc: dict) -> None:
        self.failed = DocumentJournal(self.backup)
        uid = next((d["uid"] for n, d in self.buffer if n == "start"), doc.get("run_start", "unknown"))
        logger.warning("catalog: run %s could not be written (%s); its documents go to %s, put them in later "
                       "with `nanoscope catalog ingest`", uid, exc, self.backup)
        for name, buffered in self.buffer:
            self.failed(name, buffered)
        self.buffer.clear()


class CatalogWriter:
    """A RunEngine callback writing every run to the catalog from its own thread.

    The catalog is opened by that thread when the first document arrives, so neither
    opening it nor writing to it ever delays the RunEngine.

    Parameters
    ----------
    connect : callable
        Returns the catalog's Tiled client (:func:`open_catalog`).
    backup : pathlib.Path
        Directory of the JSON Lines files of runs the catalog did not take.
    batch_size : int
        Frames and events gathered before one write (TiledWriter's ``batch_size``).
    """

    def __init__(self, connect: Callable[[], Any], backup: Path, *, batch_size: int = 200) -> None:
        self._connect = connect
        self._backup = backup
        self._batch_size = batch_size
        self._queue: queue.Queue[Document | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: Config) -> CatalogWriter:
        """The writer of the configured catalog (embedded, or the server's)."""
        return cls(lambda: open_catalog(config), backup_directory(config), batch_size=config.catalog.batch_size)

    def __call__(self, name: str, doc: dict) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="catalog-writer", daemon=True)
            self._thread.start()
        self._queue.put((name, doc))

    def _work(self) -> None:
        write: Callable[[str, dict], None]
        try:
            write = tiled_writer(self._connect(), self._batch_size)
        except Exception as exc:  # noqa: BLE001 -- an unreachable catalog: every run goes to the backup
            write = _unreachable(exc)
        router = RunRouter([lambda name, doc: ([_RunFeed(write, self._backup)], [])])
        while (item := self._queue.get()) is not None:
            try:
                router(*item)
            except Exception:  # noqa: BLE001 -- the writer thread outlives one bad document
                logger.exception("catalog: %s document not written", item[0])
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        """Wait until every document handed over so far is written (or backed up)."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def _unreachable(exc: Exception) -> Callable[[str, dict], None]:
    def write(name: str, doc: dict) -> None:
        raise ConnectionError(f"the catalog could not be opened: {exc}")

    return write


def ingest(client, path: Path, *, batch_size: int = 200) -> list[str]:
    """Put the run of a backup file (or of a scan's journal: the same format) into the catalog; returns its uid.

    A run the catalog already holds complete (it has a stop) is left as it is; one left
    half-written by the failure is replaced.
    """
    documents = read_journal(path).documents
    uids = [doc["uid"] for name, doc in documents if name == "start"]
    for uid in uids:
        if uid in client:
            if client[uid].metadata.get("stop"):
                continue
            client.delete(uid, recursive=True)
    done = {uid for uid in uids if uid in client}
    writer = tiled_writer(client, batch_size)
    router = RunRouter([lambda name, doc: ([writer], []) if doc["uid"] not in done else ([], [])])
    for name, doc in documents:
        router(name, doc)
    return uids
