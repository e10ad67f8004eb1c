"""``nanoscope recover JOURNAL.jsonl [-o OUT.nxs]``: the NXtomo files of a scan whose process died.

``add_recover_parser(subparsers)`` registers it on the ``nanoscope`` command's sub-parsers.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_recover_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``recover`` sub-command to ``subparsers``; it runs :func:`run_recover`."""
    parser = subparsers.add_parser(
        "recover", help="write the NXtomo files of a scan whose process died, from its journal",
        description="Replay a scan's document journal (paths.journal_dir/<run uid>.jsonl) into NXtomo files, with "
                    "every frame of its camera files, also those written after its last announcement; a camera "
                    "file left open by a dead writer is repaired first. See docs/reliability.md.")
    parser.add_argument("journal", type=Path, help="the run's journal (<run uid>.jsonl)")
    parser.add_argument("-o", "--output", type=Path,
                        help="NXtomo file to write (OUT_<tomogram>.nxs for several tomograms); "
                             "default: next to the camera file, as the scan names them")
    parser.set_defaults(func=run_recover)
    return parser


def run_recover(args: argparse.Namespace) -> int:
    """Recover the run, print each file written and what was recovered; exit status 0."""
    from .recovery import recover_run

    recovery = recover_run(args.journal, args.output)
    for path in recovery.repaired:
        print(f"repaired camera file: {path}", flush=True)
    for path in recovery.written:
        print(f"NXtomo file: {path}", flush=True)
    print(f"recovered: {recovery.reason}", flush=True)
    return 0
