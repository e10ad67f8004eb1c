"""The ``nanoscope`` command (DESIGN.md fixes its sub-commands and options)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from .config import Config, ConfigError, load_config
from .errors import Interrupted, RefusedInput

EXIT_REFUSED = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file overriding the defaults (see default_config.toml)")
    parser.add_argument("--prefix", help="PV prefix of the instrument (default from config: NS:)")
    parser.add_argument("--port", type=int, help="Channel Access server port on 127.0.0.1")


def _config_from_args(args: argparse.Namespace) -> Config:
    """The configuration file, then whatever the command line sets."""
    overrides: dict[str, dict] = {"epics": {}, "sim": {}, "geometry": {}, "paths": {}}
    if args.prefix is not None:
        overrides["epics"]["prefix"] = args.prefix
    if args.port is not None:
        overrides["epics"]["port"] = args.port
    for option, section, key in (("time_scale", "sim", "time_scale"), ("seed", "sim", "seed"),
                                 ("geometry", "geometry", "kind"), ("contrast", "geometry", "contrast"),
                                 ("data_dir", "paths", "data_dir")):
        value = getattr(args, option, None)
        if value is not None:
            overrides[section][key] = value
    return load_config(args.config, **overrides)


def _cmd_sim(args: argparse.Namespace) -> int:
    from .sim.data_dir import check_data_dir

    config = _config_from_args(args)
    check_data_dir(config.paths.data_path)  # both refused before the IOCs' modules load (caproto, physics: 1.5 s)
    from .sim.server import run

    return run(config)


def _cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from .server.serve import run

    return run(config, sim=args.sim)


def _cmd_live(args: argparse.Namespace, config: Config) -> int:
    from .server.live import run_live

    return run_live(config)


def _cmd_catalog_ingest(args: argparse.Namespace, config: Config) -> int:
    from .pipeline.catalog import ingest, open_catalog
    from .pipeline.journal import read_journal

    for path in args.backup:
        read_journal(path)  # every file is refused before the catalog is touched
    catalog = open_catalog(config)
    for path in args.backup:
        for uid in ingest(catalog, path, batch_size=config.catalog.batch_size):
            print(f"run {uid} from {path} is in the catalog", flush=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(_config_from_args(args), port=args.port, out=args.out, time_scale=args.time_scale,
                    days=args.days)


LAZY_COMMANDS = {
    "scan": (".scan_cli", "add_scan_parser", "run a registered plan against the IOCs, with a progress bar"),
    "queue": (".server.queue_client", "add_queue_parser", "add plans to the instrument server's queue and control it"),
    "recover": (".pipeline.recover_cli", "add_recover_parser",
                "write the NXtomo files of a scan whose process died, from its journal"),
    "recon": (".recon.cli", "add_recon_parser", "reconstruct an NXtomo file into a volume file"),
    "segment": (".analysis.cli", "add_segment_parser",
                "segment a reconstructed volume with the shipped or a given model"),
    "morphometry": (".analysis.cli", "add_morphometry_parser",
                    "porosity, lacunae and bone morphometry of a labels file"),
    "train": (".analysis.cli", "add_train_parser", "train a segmentation model; writes weights + metrics JSON"),
    "gui": (".gui.app", "add_gui_parser", "the operator console (PySide6 + pyqtgraph)"),
    "analyze": (".study_cli", "add_analyze_parser",
                "reconstruct, segment and measure a study's tomograms on dask, then the cohort table"),
}
"""Sub-commands whose options are built only when they are the command run: (module, builder, help)."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``nanoscope`` parser; the plans' options (which import ophyd) only when ``command`` is scan."""
    parser = argparse.ArgumentParser(prog="nanoscope", description="X-ray microscope control and acquisition")
    parser.add_argument("--debug", action="store_true", help="print tracebacks and every library's log messages")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="serve every simulated IOC from one process on 127.0.0.1")
    _add_connection_options(sim)
    sim.add_argument("--data-dir", help="directory the camera IOC writes into")
    sim.add_argument("--geometry", choices=["cone", "parallel"], help="imaging geometry")
    sim.add_argument("--contrast", choices=["absorption", "zernike"], help="contrast mechanism")
    sim.add_argument("--seed", type=int, help="seed of every random process")
    sim.add_argument("--time-scale", type=float, help="speed-up of slow processes (source, load, drift)")
    sim.set_defaults(func=_cmd_sim)

    demo = sub.add_parser("demo", help="start the simulated instrument and run the main job")
    _add_connection_options(demo)
    demo.add_argument("--out", help="directory for the demo's data and report (default: demo-out/ here)")
    demo.add_argument("--days", type=float, nargs="+",
                      help="study days of the imaging sessions (default 0 5 10; at least two)")
    demo.add_argument("--time-scale", type=float, help="speed-up of slow processes (default 20 in the demo)")
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser("serve", help="the instrument server: queue, catalog, documents, live analysis")
    _add_connection_options(serve)
    serve.add_argument("--data-dir", help="the data directory (camera files, catalog, the server's own files)")
    serve.add_argument("--sim", action="store_true", help="also start the simulated instrument")
    serve.set_defaults(func=_cmd_serve, with_config=True)

    live = sub.add_parser("live", help="online reconstruction of the server's documents, in its own process")
    _add_connection_options(live)
    live.set_defaults(func=_cmd_live, with_config=True)

    catalog = sub.add_parser("catalog", help="the run catalog")
    catalog_verbs = catalog.add_subparsers(dest="verb", required=True, metavar="VERB")
    ingest = catalog_verbs.add_parser("ingest", help="put runs the catalog missed (JSON Lines backups) into it")
    _add_connection_options(ingest)
    ingest.add_argument("backup", nargs="+", type=Path, help="JSON Lines files (catalog/backup/*.jsonl)")
    ingest.add_argument("--data-dir", help="the data directory whose catalog receives the runs")
    ingest.set_defaults(func=_cmd_catalog_ingest, with_config=True)

    for name, (module, function, summary) in LAZY_COMMANDS.items():
        if command == name:  # import only what runs: torch and ophyd take seconds to load
            add = getattr(importlib.import_module(module, __package__), function)
            if name in ("scan", "queue", "gui"):
                add(sub, _add_connection_options)
            else:
                add(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _configure_channel_access_early(argv: Sequence[str]) -> None:
    """For commands that talk CA: point libca at the IOCs' port before the parser imports ophyd.

    Building the ``scan`` options imports the plans (and so ophyd and pyepics), and
    libca reads its environment once.
    """
    if not argv or argv[0] not in ("scan", "queue"):
        return
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    early.add_argument("--port", type=int)
    known, _ = early.parse_known_args(argv[1:])
    try:
        config = load_config(known.config, **({"epics": {"port": known.port}} if known.port else {}))
    except ConfigError:
        return  # reported with the full parser's arguments below
    from .epics_env import configure_client

    configure_client([config.epics.port])


class _OneLine(logging.Formatter):
    """Log records as one line: what happened, without the traceback (that is for --debug)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(debug: bool) -> None:
    """Warnings as one line each; bluesky's own record of an aborted run only with --debug.

    bluesky logs every exception that ends a plan with its traceback ("Run aborted"); the
    command prints the reason itself, once.
    """
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        return
    handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("bluesky").setLevel(logging.CRITICAL)
    logging.getLogger("tiled").setLevel(logging.WARNING)  # the embedded catalog announces its version at INFO


def _command_words(argv: Sequence[str]) -> list[str]:
    """The arguments from the sub-command on (global options like --debug may come first)."""
    return [word for word in argv if word != "--debug"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    words = _command_words(argv)
    _configure_channel_access_early(words)
    args = build_parser(words[0] if words else None).parse_args(argv)
    _configure_logging(args.debug)
    name = " ".join(["nanoscope", args.command, *([args.plan] if getattr(args, "plan", None) else [])])
    try:
        if args.command in ("scan", "queue") or getattr(args, "with_config", False):
            return args.func(args, _config_from_args(args))
        return args.func(args)
    except ConfigError as exc:
        return _report(name, f"configuration error: {exc}", EXIT_REFUSED, args.debug)
    except RefusedInput as exc:
        return _report(name, str(exc), EXIT_REFUSED, args.debug)
    except KeyboardInterrupt:
        return _report(name, "interrupted", EXIT_INTERRUPTED, args.debug)
    except Interrupted as exc:
        return _report(name, f"interrupted: {exc}", EXIT_INTERRUPTED, args.debug)
    except Exception as exc:  # noqa: BLE001 -- every failure ends as one line and an exit code
        return _report(name, f"failed: {_reason(exc)}", EXIT_FAILED, args.debug)


def _reason(exc: BaseException) -> str:
    """What went wrong: a device's own error rather than bluesky's wrapper of its failed Status."""
    while type(exc).__name__ == "FailedStatus" and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _report(name: str, message: str, code: int, debug: bool) -> int:
    """One line on stderr (and the traceback with --debug); returns the exit code."""
    if debug:
        traceback.print_exc()
    print(f"{name}: {message}", file=sys.stderr)
    return code
