"""The document journal: every document of every run, on disk the moment it arrives.

A scan process that dies (SIGKILL, a crash, a lost machine) takes its callbacks' state
with it: the NXtomo writer writes its files only at the run's stop. The journal keeps
the run's documents so that ``nanoscope recover`` can replay them afterwards. Each run
goes to ``<directory>/<run uid>.jsonl``, one ``{"name": ..., "doc": ...}`` per line
(bluesky's :class:`~bluesky.callbacks.json_writer.JSONLinesWriter` format; it writes
them). Each line is written and its file closed before the next document, so a killed
process loses at most the document being written: :func:`read_journal` accepts a
journal whose last line was cut short.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from bluesky.callbacks.json_writer import JSONLinesWriter
from event_model import sanitize_doc

from ..errors import RefusedInput

JOURNAL_SUFFIX = ".jsonl"


class JournalError(RefusedInput):
    """A journal that cannot be written or read; the message names the file and the fix."""


class DocumentJournal:
    """A bluesky callback writing each run's documents to ``directory/<run uid>.jsonl`` as they arrive.

    Parameters
    ----------
    directory
        Where the journals go (``paths.journal_dir``); created if missing.

    Raises
    ------
    JournalError
        ``directory`` cannot be created or written (raised here, before any run starts).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the journal directory {self.directory} ({exc.strerror}); set "
                               "paths.journal_dir to a writable directory") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise JournalError(f"the journal directory {self.directory} is not writable; set paths.journal_dir "
                               "to a writable directory")
        self.path: Path | None = None
        """The journal of the current (or last) run."""
        self._writer: JSONLinesWriter | None = None

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self.path = self.directory / f"{doc['uid']}{JOURNAL_SUFFIX}"
            self._writer = JSONLinesWriter(str(self.directory), self.path.name)
        if self._writer is None:
            return  # a document outside a run (none is emitted by the RunEngine)
        self._writer(name, sanitize_doc(doc))
        if name == "stop":
            self._writer = None


@dataclass(frozen=True)
class Journal:
    """The documents a journal holds, in the order they were emitted."""

    path: Path
    documents: list[tuple[str, dict]]
    cut_short: bool
    """Its last line was cut short (the process died while writing it); that document is lost."""

    def named(self, name: str) -> list[dict]:
        return [doc for kind, doc in self.documents if kind == name]


def read_journal(path: Path) -> Journal:
    """The documents of the journal at ``path``.

    Raises
    ------
    JournalError
        The file is missing, is not a document journal, or holds no start document.
    """
    path = Path(path)
    if not path.is_file():
        raise JournalError(f"journal {path} does not exist; pass the {JOURNAL_SUFFIX} file a scan wrote under "
                           "paths.journal_dir (named by the run uid)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"cannot read journal {path} ({exc}); pass the {JOURNAL_SUFFIX} file of a scan") from None
    documents: list[tuple[str, dict]] = []
    cut_short = False
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            documents.append((str(entry["name"]), dict(entry["doc"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if number == len(lines) and isinstance(exc, json.JSONDecodeError):
                cut_short = True  # the process died while writing its last document
                continue
            raise JournalError(f"journal {path} line {number} is not a {{\"name\", \"doc\"}} document ({exc}); "
                               "pass an unedited journal written by a scan") from None
    if not documents or documents[0][0] != "start":
        raise JournalError(f"journal {path} does not begin with a start document; pass the journal of one run "
                           f"(<run uid>{JOURNAL_SUFFIX})")
    return Journal(path, documents, cut_short)
