"""The ``nanoscope`` command (DESIGN.md fixes its sub-commands and options)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .config import Config, ConfigError, load_config


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file overriding the defaults (see default_config.toml)")
    parser.add_argument("--prefix", help="PV prefix of the instrument (default from config: NS:)")
    parser.add_argument("--port", type=int, help="Channel Access server port on 127.0.0.1")


def _config_from_args(args: argparse.Namespace) -> Config:
    """The configuration file, then whatever the command line sets."""
    overrides: dict[str, dict] = {"epics": {}, "sim": {}, "paths": {}}
    if args.prefix is not None:
        overrides["epics"]["prefix"] = args.prefix
    if args.port is not None:
        overrides["epics"]["port"] = args.port
    for option, section in (("time_scale", "sim"), ("seed", "sim"), ("geometry", "sim"), ("contrast", "sim"), ("data_dir", "paths")):
        value = getattr(args, option, None)
        if value is not None:
            overrides[section][option] = value
    return load_config(args.config, **overrides)


def _cmd_sim(args: argparse.Namespace) -> int:
    from .sim.server import run

    return run(_config_from_args(args))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(_config_from_args(args), port=args.port, out=args.out, time_scale=args.time_scale)


LAZY_COMMANDS = {
    "scan": (".scan_cli", "add_scan_parser", "run a registered plan against the IOCs, with a progress bar"),
    "recon": (".recon.cli", "add_recon_parser", "reconstruct an NXtomo file into a volume file"),
    "segment": (".analysis.cli", "add_segment_parser", "segment a reconstructed volume with the shipped or a given model"),
    "morphometry": (".analysis.cli", "add_morphometry_parser", "porosity, lacunae and bone morphometry of a labels file"),
    "train": (".analysis.cli", "add_train_parser", "train a segmentation model; writes weights + metrics JSON"),
    "analyze": (".analysis.study.cli", "add_analyze_parser",
                "reconstruct, segment and measure a study's tomograms on dask, then the cohort table"),
}
"""Sub-commands whose options are built only when they are the command run: (module, builder, help)."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``nanoscope`` parser; the plans' options (which import ophyd) only when ``command`` is scan."""
    parser = argparse.ArgumentParser(prog="nanoscope", description="X-ray microscope control and acquisition")
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
    demo.add_argument("--out", help="directory for the demo's data (default: a new temporary one)")
    demo.add_argument("--time-scale", type=float, help="speed-up of slow processes (default 20 in the demo)")
    demo.set_defaults(func=_cmd_demo)

    for name, (module, function, summary) in LAZY_COMMANDS.items():
        if command == name:  # import only what runs: torch and ophyd take seconds to load
            add = getattr(importlib.import_module(module, __package__), function)
            if name == "scan":
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
    if not argv or argv[0] != "scan":
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_channel_access_early(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        if args.command == "scan":
            return args.func(args, _config_from_args(args))
        return args.func(args)
    except ConfigError as exc:
        print(f"nanoscope {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
