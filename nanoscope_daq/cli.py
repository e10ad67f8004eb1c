"""The ``nanoscope`` command (DESIGN.md fixes its sub-commands and options)."""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"nanoscope {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
