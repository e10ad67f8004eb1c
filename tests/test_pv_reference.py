"""docs/pv-reference.md is generated from the IOC definitions and must stay current."""

from __future__ import annotations

from pathlib import Path

from nanoscope_daq.config import load_config
from nanoscope_daq.sim.pv_reference import REFERENCE_PREFIX, render_reference
from nanoscope_daq.sim.server import build_iocs
from nanoscope_daq.sim.world import World

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "pv-reference.md"


def test_reference_file_is_current():
    assert REFERENCE.read_text() == render_reference(), (
        "docs/pv-reference.md is stale: regenerate it with `make docs` "
        "(python -m nanoscope_daq.sim.pv_reference > docs/pv-reference.md)"
    )


def test_every_documented_pv_says_what_it_is():
    """PVs outside the standard interfaces are this project's own: each needs a description."""
    groups = build_iocs(World.from_config(load_config(environment=False, epics={"prefix": REFERENCE_PREFIX})))
    undocumented = [
        name
        for group in groups
        if not getattr(group, "standard_interface", None)
        for name, channel in group.pvdb.items()
        if not (getattr(channel, "pvspec", None) and channel.pvspec.doc)
    ]
    assert undocumented == []
    assert any(name.startswith(REFERENCE_PREFIX + "SRC:") for group in groups for name in group.pvdb)
