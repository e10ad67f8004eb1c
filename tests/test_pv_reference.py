"""docs/pv-reference.md is generated from the IOC definitions and must stay current."""

from __future__ import annotations

from pathlib import Path

from nanoscope_daq.sim.pv_reference import reference_config, render_reference
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
    config = reference_config()
    groups = build_iocs(World.from_config(config))
    undocumented = [
        name
        for group in groups
        if not getattr(group, "standard_interface", None)
        for name, channel in group.pvdb.items()
        if not (getattr(channel, "pvspec", None) and channel.pvspec.doc)
    ]
    assert undocumented == []
    assert any(name.startswith(config.epics.prefix + "SRC:") for group in groups for name in group.pvdb)
