"""``nanoscope scan PLAN --param value ...``: run one registered plan against the IOCs.

Options come from the plan's signature (names, types, defaults); ``--help`` lists
them with the plan's docstring. A progress bar counts announced frames; every file
written is printed, then the run uid. Ctrl-C pauses at once with the shutter closed,
and asks whether to resume or abort.
"""

from __future__ import annotations

import argparse
import inspect
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Config

SKIPPED_PARAMETERS = {"xrm", "config", "md"}
CONNECT_TIMEOUT_S = 10.0


class InstrumentUnreachable(RuntimeError):
    """The IOCs did not answer: the message names the prefix, the port and what to check."""


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}); e.g. '{{\"subject_id\": \"M07\", ...}}'") from None


def _option(parser: argparse.ArgumentParser, parameter: inspect.Parameter, annotation: str, meaning: str) -> None:
    """One ``--name`` option for a keyword parameter, typed from its annotation, ``meaning`` from the docstring."""
    flag = "--" + parameter.name.replace("_", "-")
    default = parameter.default
    shown = "required" if default is inspect.Parameter.empty else f"default: {default!r}"
    kwargs: dict[str, Any] = {"dest": parameter.name, "default": argparse.SUPPRESS}
    if annotation.startswith("bool"):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif annotation.startswith("Sequence[float]"):
        kwargs.update(type=float, nargs="+", metavar="N")
    elif annotation.startswith("int"):
        kwargs.update(type=int)
    elif annotation.startswith("float"):
        kwargs.update(type=float)
    elif "Mapping" in annotation:
        kwargs.update(type=_parse_json, metavar="JSON")
    else:
        kwargs.update(type=str)
    parser.add_argument(flag, help=f"{meaning} [{annotation}; {shown}]".strip(), **kwargs)


def add_plan_parsers(parser: argparse.ArgumentParser, add_connection_options: Callable[[argparse.ArgumentParser], None],
                     func: Callable[..., int]) -> None:
    """One sub-command of ``parser`` per registered plan, its options from the plan's signature and docstring.

    Shared by ``nanoscope scan`` and ``nanoscope queue add``: the same options, the same help.
    The plans import ophyd, which starts libca: call this only once Channel Access is configured.
    """
    from .plans import PLANS
    from .plans.registry import parameter_help

    plans = parser.add_subparsers(dest="plan", required=True, metavar="PLAN")
    for name, plan in PLANS.items():
        doc = inspect.getdoc(plan) or ""
        sub = plans.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        add_connection_options(sub)
        sub.add_argument("--data-dir", help="directory the camera writes into (as the IOC's --data-dir)")
        hints = plan.__annotations__  # strings: the plans use postponed annotations
        meanings = parameter_help(plan)
        for parameter in inspect.signature(plan).parameters.values():
            if parameter.name in SKIPPED_PARAMETERS:
                continue
            _option(sub, parameter, str(hints.get(parameter.name, "str")), meanings.get(parameter.name, ""))
        sub.set_defaults(func=func)


def add_scan_parser(subparsers, add_connection_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """``nanoscope scan``: one sub-command per registered plan, its options from the signature."""
    scan = subparsers.add_parser("scan", help="run a registered plan against the IOCs, with a progress bar")
    add_plan_parsers(scan, add_connection_options, run_scan_command)


def plan_kwargs(plan: Callable, args: argparse.Namespace) -> dict[str, Any]:
    """The plan's keyword arguments given on the command line (the instrument and configuration aside)."""
    parameters = inspect.signature(plan).parameters
    return {name: getattr(args, name) for name in set(parameters) - SKIPPED_PARAMETERS if hasattr(args, name)}


def connect_instrument(config: Config):
    """The instrument, connected; :class:`InstrumentUnreachable` naming prefix and port when it does not answer."""
    from ophyd.signal import EpicsSignalBase

    from .devices import Instrument

    try:
        EpicsSignalBase.set_defaults(connection_timeout=config.epics.connection_timeout_s)
    except RuntimeError:  # ophyd signals exist already in this process (a second instrument, a test session):
        pass  # their defaults stand; ophyd allows setting them only before the first signal
    try:
        xrm = Instrument(config.epics.prefix, name="xrm")
        xrm.wait_for_connection(timeout=CONNECT_TIMEOUT_S)
    except TimeoutError as exc:
        raise InstrumentUnreachable(
            f"cannot reach the instrument {config.epics.prefix} on port {config.epics.port} "
            f"({str(exc).split(' could not')[0]} did not answer); is `nanoscope sim` (or the IOCs) running, "
            "with this prefix and port?"
        ) from None
    return xrm


class FrameProgress:
    """A progress bar of projection frames announced, sized from the start document."""

    def __init__(self) -> None:
        self.bar = None
        self.projection_descriptors: set[str] = set()
        self.image_resources: set[str] = set()
        self.camera_files: list[str] = []

    def __call__(self, name: str, doc: dict) -> None:
        from tqdm import tqdm

        if name == "start":
            scan = doc.get("scan", {})
            total = scan.get("projections", 0) * max(scan.get("tomograms", 1), len(scan.get("loads_n", [])) or 1)
            self.bar = tqdm(total=total or None, unit="frame", desc=doc.get("plan_name", "scan"), file=sys.stderr)
        elif name == "descriptor" and doc.get("name") == "projections":
            self.projection_descriptors.add(doc["uid"])
        elif name == "stream_resource" and doc["data_key"] == "image":
            self.image_resources.add(doc["uid"])
            uri = doc["uri"].removeprefix("file://localhost")
            if uri not in self.camera_files:
                self.camera_files.append(uri)
                print(f"camera file: {uri}", flush=True)
        elif name == "stream_datum" and self.bar is not None:
            if doc["stream_resource"] in self.image_resources and doc["descriptor"] in self.projection_descriptors:
                self.bar.update(doc["indices"]["stop"] - doc["indices"]["start"])
        elif name == "stop" and self.bar is not None:
            self.bar.close()


class PauseAtOnce:
    """RunEngine context manager: Ctrl-C pauses at once, not at the next checkpoint.

    bluesky's default asks for a deferred pause first, which waits for the plan's next
    checkpoint (tens of seconds in a long wait for frames). An immediate pause makes the
    RunEngine call the beam guard's ``pause()`` straight away: the shutter closes within
    the second, and a fly scan resumes at the first angle not imaged.
    """

    def __init__(self, RE) -> None:
        self._RE = RE
        self._requested = threading.Event()
        self._released = threading.Event()

    def _serve(self) -> None:
        from bluesky.utils import TransitionError

        while True:
            self._requested.wait()
            self._requested.clear()
            if self._released.is_set():
                return
            print("\nPausing now; the shutter closes.", file=sys.stderr, flush=True)
            try:
                self._RE.request_pause(defer=False)
            except TransitionError:
                pass  # already pausing or paused

    def __enter__(self) -> PauseAtOnce:
        self._original = signal.getsignal(signal.SIGINT)
        self._released.clear()
        threading.Thread(target=self._serve, name="pause-at-once", daemon=True).start()
        signal.signal(signal.SIGINT, lambda signum, frame: self._requested.set())
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._original)
        self._released.set()
        self._requested.set()


def _ask_resume_or_abort(RE) -> tuple[str, ...]:
    """After a Ctrl-C pause: resume (returns the run uids) or abort (raises :class:`Interrupted`).

    With no terminal to answer from (standard input closed), the scan is aborted.
    """
    from bluesky.utils import RunEngineInterrupted

    from .errors import Interrupted

    while True:
        print("\nPaused; the shutter is closed. [r]esume or [a]bort? ", end="", flush=True)
        try:
            answer = sys.stdin.readline().strip().lower()
        except KeyboardInterrupt:  # Ctrl-C at the prompt: abort
            answer = "abort"
        if answer in ("a", "abort", ""):
            RE.abort("aborted by the operator")
            raise Interrupted("the scan was aborted; the shutter is closed and every frame taken is in its files")
        if answer in ("r", "resume"):
            try:
                return RE.resume()
            except RunEngineInterrupted:
                continue


def run_scan_command(args: argparse.Namespace, config: Config) -> int:
    """Connect, run the plan with progress, print files and uid; 2 on refused input."""
    from .epics_env import configure_client

    configure_client([config.epics.port])
    from .plans import PLANS
    from .plans.registry import check_plan_call

    plan = PLANS[args.plan]
    kwargs = plan_kwargs(plan, args)
    if "config" in inspect.signature(plan).parameters:
        kwargs["config"] = config
    xrm = connect_instrument(config)
    check_plan_call(plan, xrm, **kwargs)  # refused before the callbacks load (torch, Tiled: seconds)
    from bluesky import RunEngine
    from bluesky.utils import RunEngineInterrupted

    from .pipeline import NXtomoWriter
    from .pipeline.catalog import CatalogWriter
    from .pipeline.journal import DocumentJournal

    journal = DocumentJournal(config.paths.journal_path)  # refused here if its directory is not writable
    RE = RunEngine({}, context_managers=[PauseAtOnce])
    RE.subscribe(journal)  # first: each document is on disk before any other callback sees it
    RE.subscribe(lambda name, doc: print(f"journal: {journal.path} (`nanoscope recover` it if this process dies)",
                                         flush=True), "start")
    progress = FrameProgress()
    RE.subscribe(progress)
    RE.subscribe(NXtomoWriter(on_file_written=lambda path: print(f"NXtomo file: {Path(path)}", flush=True)))
    catalog = CatalogWriter.from_config(config)
    RE.subscribe(catalog)
    online = None
    if config.recon.online:
        from .pipeline.streaming import StreamingReconstruction

        online = StreamingReconstruction(config=config, on_volume=lambda path: print(f"online volume: {path}",
                                                                                      flush=True))
        RE.subscribe(online)
    try:
        try:
            uids = RE(plan(xrm, **kwargs))
        except RunEngineInterrupted:
            uids = _ask_resume_or_abort(RE)
    finally:
        if online is not None:
            online.close()  # the last volumes are written before the command returns
        catalog.close()  # every run is in the catalog (or its backup) before the command returns
    for uid in uids:
        print(f"run uid: {uid}", flush=True)
    return 0
