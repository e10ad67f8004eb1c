"""The console's client of the queue: every request to the RE Manager, off the GUI thread.

One worker thread owns the connection to the server (bluesky-queueserver-api over 0MQ)
and the connected instrument the plans are checked against; the GUI asks it for things
and gets the answers as Qt signals. A plan is checked with its own checks
(:func:`~nanoscope_daq.plans.registry.check_plan_call`, as ``nanoscope queue add``
does) before it is queued. Abort pauses at once first (the beam guard closes the
shutter), then aborts: the RE Manager aborts only a paused plan.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from ..config import Config
from ..errors import RefusedInput
from ..plans import PLANS
from ..plans.errors import InstrumentNotReady
from ..plans.registry import check_plan_call
from ..scan_cli import InstrumentUnreachable, connect_instrument
from ..server.queue_client import ServerUnreachable, manager

PAUSED_WAIT_S = 30.0


class QueueController(QObject):
    """Requests to the server at ``address``, answered by :attr:`status`, :attr:`items` and :attr:`message`.

    Parameters
    ----------
    config : Config
        The console's configuration (the instrument's prefix and port, the plans' configuration).
    address : str
        The RE Manager's control address (``qserver=`` of the server's ready line).
    """

    status = Signal(dict)
    """The RE Manager's status, after each poll."""
    items = Signal(list, list, dict)
    """The queue, the history and the running item (empty when none), when they changed."""
    message = Signal(str, bool)
    """What a request did, or why it was refused (True)."""

    def __init__(self, config: Config, address: str) -> None:
        super().__init__()
        self.config = config
        self.address = address
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="queue-client")
        self._instrument: Any = None
        self._polling: concurrent.futures.Future | None = None
        self._seen_uids: tuple[str, str] | None = None

    def _request(self, work: Callable[[Any], Any]) -> Any:
        with manager(self.config, address=self.address) as api:
            return work(api)

    def _run(self, task: Callable[[], str | None]) -> concurrent.futures.Future:
        def guarded() -> None:
            try:
                done = task()
            except (RefusedInput, ServerUnreachable, InstrumentUnreachable) as exc:
                self.message.emit(str(exc), True)
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is shown, never kills the console
                self.message.emit(f"{type(exc).__name__}: {exc}", True)
            else:
                if done:
                    self.message.emit(done, False)

        return self._worker.submit(guarded)

    # -- polling ---------------------------------------------------------------------------------------------------
    def poll(self) -> None:
        """Ask for the status (and the queue and history when they changed); skipped while the last poll runs."""
        if self._polling is not None and not self._polling.done():
            return
        self._polling = self._run(self._poll)

    def _poll(self) -> None:
        def work(api: Any) -> None:
            status = api.status()
            self.status.emit(status)
            uids = (status.get("plan_queue_uid", ""), status.get("plan_history_uid", ""))
            if uids != self._seen_uids:
                self._seen_uids = uids
                queue = api.queue_get()
                self.items.emit(queue["items"], api.history_get()["items"], queue.get("running_item") or {})

        self._request(work)

    # -- requests --------------------------------------------------------------------------------------------------
    def submit(self, name: str, kwargs: dict[str, Any]) -> concurrent.futures.Future:
        """Check ``name(**kwargs)`` against the instrument with the plan's own checks, then queue it."""
        return self._run(lambda: self._submit(name, kwargs))

    def connect(self) -> concurrent.futures.Future:
        """Connect the instrument the plans are checked against (ahead of the first submission)."""
        return self._run(self._connect)

    def _connect(self) -> None:
        if self._instrument is None:
            self._instrument = connect_instrument(self.config)

    def _submit(self, name: str, kwargs: dict[str, Any]) -> str:
        from bluesky_queueserver_api import BPlan

        plan = PLANS[name]
        self._connect()
        extra = {"config": self.config} if "config" in inspect.signature(plan).parameters else {}
        note = ""
        try:
            check_plan_call(plan, self._instrument, **kwargs, **extra)
        except InstrumentNotReady as exc:  # a plan queued before it may change that (source_on first)
            note = f" (not ready now: {exc}; checked again when it runs)"
        response = self._request(lambda api: api.item_add(BPlan(name, "xrm", **kwargs)))
        return f"queued {name}; {response['qsize']} in the queue{note}"

    def start(self) -> concurrent.futures.Future:
        """Start the queue."""
        return self._run(lambda: self._request(lambda api: api.queue_start()) and "queue started")

    def pause(self) -> concurrent.futures.Future:
        """Pause the running plan at once (its beam guard closes the shutter)."""
        return self._run(lambda: self._request(lambda api: api.re_pause("immediate")) and "pause requested")

    def resume(self) -> concurrent.futures.Future:
        """Resume the paused plan."""
        return self._run(lambda: self._request(lambda api: api.re_resume()) and "resumed")

    def abort(self) -> concurrent.futures.Future:
        """Abort the running or paused plan: pause at once (shutter closed), then abort (files kept)."""
        return self._run(self._abort)

    def _abort(self) -> str:
        def work(api: Any) -> str:
            if api.status()["re_state"] == "running":
                api.re_pause("immediate")
            deadline = time.monotonic() + PAUSED_WAIT_S
            while api.status()["re_state"] != "paused":
                if time.monotonic() > deadline:
                    raise RefusedInput(f"the plan did not pause within {PAUSED_WAIT_S:g} s; not aborted")
                time.sleep(0.2)
            api.re_abort()
            return "aborted: the shutter is closed and every frame taken is in its files"

        return self._request(work)

    def stop_queue(self) -> concurrent.futures.Future:
        """Stop the queue after the running item."""
        return self._run(lambda: self._request(lambda api: api.queue_stop()) and "the queue stops after this item")

    def close(self) -> None:
        """Finish the request under way; drop the rest."""
        self._worker.shutdown(wait=True, cancel_futures=True)
