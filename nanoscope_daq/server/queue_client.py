"""``nanoscope queue ...``: a client of the server's queue, built on bluesky-queueserver-api.

``queue add PLAN --param value`` takes the same options as ``nanoscope scan PLAN`` and runs
the plan's own checks against the instrument before the item is sent (so a bad parameter
is refused with the plan's message, and nothing is queued); the server then validates
it again against its allowlist. The other verbs map one to one onto the RE Manager's API.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..config import Config
from ..errors import RefusedInput

PAUSE_OPTIONS = ("immediate", "deferred")


class QueueRefused(RefusedInput):
    """The server refused a request; the message is the server's."""


class ServerUnreachable(RuntimeError):
    """No RE Manager answers at the configured address."""


@contextlib.contextmanager
def manager(config: Config, *, timeout_s: float = 10.0, address: str | None = None) -> Iterator[Any]:
    """An ``REManagerAPI`` of the configured server, or of the one at ``address`` (closed on exit).

    A request the server refuses raises :class:`QueueRefused` with the server's reason; a
    server that does not answer, :class:`ServerUnreachable` naming the address.
    """
    from bluesky_queueserver_api.comm_base import RequestFailedError, RequestTimeoutError
    from bluesky_queueserver_api.zmq import REManagerAPI

    address = address or config.server.control_address
    api = REManagerAPI(zmq_control_addr=address, timeout_recv=timeout_s)
    try:
        yield api
    except RequestTimeoutError:
        raise ServerUnreachable(f"no instrument server answers at {address}; is `nanoscope serve` running "
                                "with this configuration ([server] ports)?") from None
    except RequestFailedError as exc:
        raise QueueRefused(refusal(str(exc))) from None
    finally:
        api.close()


FIXES = (
    ("not in the list of allowed plans", "the queue runs the instrument's plans only: `nanoscope queue add --help` "
                                         "lists them"),
    ("is not allowed for users", "the queue runs no functions, only the instrument's plans"),
    ("Input should be 'xrm'", "the instrument argument is the device `xrm`"),
    ("validation error", "give each parameter the type `nanoscope queue add PLAN --help` shows"),
)
"""Server refusals a client can act on, and what to do (the server names the problem, not the fix)."""


def refusal(text: str) -> str:
    """The server's reason in one line (without the echo of the whole item), with the fix when known."""
    reason = " ".join(text.replace("Request failed: ", "").split("\nPlan:")[0].split())
    fixes = [fix for pattern, fix in FIXES if pattern in reason]
    return f"the server refused the request: {reason}" + (f"; {fixes[0]}" if fixes else "")


def add_item(args: argparse.Namespace, config: Config) -> int:
    """``queue add PLAN ...``: check the call against the instrument, then add it to the queue."""
    from bluesky_queueserver_api import BPlan

    from ..plans import PLANS
    from ..plans.errors import InstrumentNotReady
    from ..plans.registry import check_plan_call
    from ..scan_cli import connect_instrument, plan_kwargs

    plan = PLANS[args.plan]
    kwargs = plan_kwargs(plan, args)
    extra = {"config": config} if "config" in inspect.signature(plan).parameters else {}
    try:
        check_plan_call(plan, connect_instrument(config), **kwargs, **extra)
    except InstrumentNotReady as exc:  # a plan queued earlier may change that state (source_on first)
        print(f"note: not ready now ({exc}); checked again when it runs", flush=True)
    with manager(config) as api:
        response = api.item_add(BPlan(args.plan, "xrm", **kwargs))
    item = response["item"]
    print(f"queued {item['name']} (item {item['item_uid']}); {response['qsize']} in the queue", flush=True)
    return 0


def _status_line(status: dict) -> str:
    keys = ("manager_state", "re_state", "items_in_queue", "items_in_history", "queue_stop_pending",
            "worker_environment_exists")
    return " ".join(f"{key}={status.get(key)}" for key in keys)


def control(args: argparse.Namespace, config: Config) -> int:
    """``queue start|pause|resume|stop|abort|status|history``."""
    with manager(config) as api:
        verb = args.verb
        if verb == "status":
            print(_status_line(api.status()), flush=True)
        elif verb == "history":
            for item in api.history_get()["items"]:
                result = item.get("result", {})
                print(json.dumps({"name": item["name"], "kwargs": item.get("kwargs", {}),
                                  "exit_status": result.get("exit_status"), "msg": result.get("msg", ""),
                                  "run_uids": result.get("run_uids", [])}), flush=True)
        elif verb == "pause":
            api.re_pause(args.option)
            print(f"pause requested ({args.option})", flush=True)
        else:
            method = {"start": "queue_start", "resume": "re_resume", "stop": "queue_stop", "abort": "re_abort"}[verb]
            getattr(api, method)()
            print(f"{verb}: done", flush=True)
        if getattr(args, "wait", False):
            _wait_idle(api)
    return 0


def _wait_idle(api: Any) -> None:
    """Until the queue has run out (or stopped), printing each state change."""
    last = None
    while True:
        status = api.status()
        line = _status_line(status)
        if line != last:
            print(line, flush=True)
            last = line
        if status["manager_state"] == "idle":
            return
        time.sleep(0.5)


def add_queue_parser(subparsers, add_connection_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """``nanoscope queue``: ``add PLAN ...`` with the plans' own options, and the control verbs."""
    from ..scan_cli import add_plan_parsers

    queue = subparsers.add_parser("queue", help="add plans to the instrument server's queue and control it")
    verbs = queue.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="check a plan call against the instrument and add it to the queue")
    add_plan_parsers(add, add_connection_options, add_item)
    helps = {"start": "start the queue", "pause": "pause the running plan (shutter closed)",
             "resume": "resume the paused plan", "stop": "stop the queue after the running item",
             "abort": "abort the paused plan (shutter closed, files kept)", "status": "the server's state",
             "history": "the items run, one JSON line each"}
    for verb, summary in helps.items():
        sub = verbs.add_parser(verb, help=summary)
        add_connection_options(sub)
        if verb == "pause":
            sub.add_argument("--option", choices=PAUSE_OPTIONS, default="immediate",
                             help="immediate (default: at once, shutter closed) or deferred (next checkpoint)")
        if verb in ("start", "resume"):
            sub.add_argument("--wait", action="store_true", help="return when the queue has run out")
        sub.set_defaults(func=control)
