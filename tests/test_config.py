"""The one TOML configuration: documented defaults, overrides, clear refusals."""

from __future__ import annotations

import ast
import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest

import nanoscope_daq
from nanoscope_daq.config import CONFIG_ENV_VAR, Config, ConfigError, default_config_text, load_config


def test_defaults_match_design_contract():
    config = load_config()
    assert config.epics.prefix == "NS:"
    assert config.geometry.kind in ("cone", "parallel")
    assert set(config.stages.axes()) == {"rot", "sx", "sy", "sz"}


def test_every_key_of_the_default_file_is_documented_by_a_comment_or_section():
    """Each table in the shipped file starts with a comment line saying what it is for."""
    text = default_config_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("[") and not line.startswith("[stages."):
            assert lines[i + 1].startswith("#"), f"section {line} has no comment explaining it"


def test_user_file_overrides_a_subset(tmp_path):
    user = tmp_path / "xrm.toml"
    user.write_text('[epics]\nprefix = "XRM2:"\n[stages.rot]\nvelocity = 90\n')
    config = load_config(user)
    assert config.epics.prefix == "XRM2:"
    assert config.stages.rot.velocity == 90.0 and isinstance(config.stages.rot.velocity, float)
    assert config.stages.sx == load_config().stages.sx


def test_a_user_file_sets_instrument_and_simulator_tables_apart(tmp_path):
    user = tmp_path / "txm.toml"
    user.write_text('[geometry]\nkind = "parallel"\ncontrast = "zernike"\n[sim.phantom]\npits_per_day = 0.0\n')
    config = load_config(user)
    assert (config.geometry.kind, config.geometry.contrast, config.sim.phantom.pits_per_day) == (
        "parallel", "zernike", 0.0)
    assert config.sim.phantom.bone_length_mm == load_config().sim.phantom.bone_length_mm


def test_no_module_loads_the_configuration_when_imported():
    """Callers pass the configuration: a module-level load_config() would read a user's file at import.

    The one exception is an entry point: the RE Manager's worker imports its startup module
    (it cannot call a function), and that module's job is to read the file ``nanoscope serve``
    wrote for it ($NANOSCOPE_CONFIG). No other module imports it.
    """
    package = Path(nanoscope_daq.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.relative_to(package).as_posix() == "server/startup.py":
            continue
        tree = ast.parse(path.read_text())
        nodes = [node for statement in tree.body if not isinstance(statement, (ast.FunctionDef, ast.ClassDef))
                 for node in ast.walk(statement)]
        if any(isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_config" for node in nodes):
            offenders.append(str(path.relative_to(package)))
    assert offenders == []


def test_environment_variable_names_the_user_file(tmp_path, monkeypatch):
    user = tmp_path / "env.toml"
    user.write_text("[sim]\nseed = 7\n")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(user))
    assert load_config().sim.seed == 7
    # The generated PV reference must not depend on whoever runs it: environment=False ignores the file.
    assert load_config(environment=False).sim.seed == tomllib.loads(default_config_text())["sim"]["seed"] != 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sim": {"bogus": 1}}, "unknown configuration key sim.bogus"),
        ({"stages": {"rot": {"velocty": 1.0}}}, "unknown configuration key stages.rot.velocty"),
        ({"sim": {"time_scale": 0}}, "sim.time_scale = 0.0 is invalid: it must be > 0"),
        ({"sim": {"time_scale": "fast"}}, "sim.time_scale must be of type float"),
        ({"sim": {"seed": True}}, "sim.seed must be of type int"),
        ({"geometry": {"kind": "fan"}}, "geometry.kind = 'fan' is invalid: it must be one of 'cone', 'parallel'"),
        ({"epics": {"port": 70000}}, "epics.port = 70000 is invalid"),
        ({"stages": {"sx": {"low_limit": 30.0}}}, "stages.sx.low_limit (30.0) must be below stages.sx.high_limit"),
        ({"stages": {"rot": {"velocity": 1000.0}}}, "stages.rot.velocity (1000.0) exceeds stages.rot.max_velocity"),
        ({"source": {"kv_min": 80.0}}, "source.kv_min must be below source.kv_max"),
        ({"loadcell": {"force_limit_default_n": 600.0}}, "loadcell.force_limit_default_n exceeds the cell's"),
        ({"physiology": {"heart_rate_alarm_low_bpm": 700.0}},
         "physiology.heart_rate_alarm_low_bpm must be below physiology.heart_rate_alarm_high_bpm"),
        ({"camera": {"exposure_min_s": 40.0}}, "camera.exposure_min_s must be below camera.exposure_max_s"),
        ({"detector": {"pixel_um": 0}}, "detector.pixel_um = 0.0 is invalid: it must be > 0"),
        # the simulator's tables: the same checks, the full dotted key
        ({"sim": {"specimen": {"yield_force_n": 30.0}}},
         "sim.specimen.yield_force_n must be below sim.specimen.failure_force_n"),
        ({"sim": {"physiology": {"gate_fraction": 1.0}}}, "sim.physiology.gate_fraction = 1.0 is invalid"),
        ({"sim": {"phantom": {"pit_depth_min_um": 50.0}}},
         "sim.phantom.pit_depth_min_um must not exceed sim.phantom.pit_depth_max_um"),
        ({"sim": {"detector": {"bit_depth": 14}}}, "sim.detector.bit_depth = 14 is invalid: it must be 12 or 16"),
        ({"sim": {"optics": {"bogus": 1}}}, "unknown configuration key sim.optics.bogus"),
        # a rule joining both: the simulated camera starts inside the instrument's exposure range
        ({"sim": {"camera": {"acquire_time_s": 60.0}}},
         "sim.camera.acquire_time_s must lie between camera.exposure_min_s and camera.exposure_max_s"),
        # keys of the layout before the split name their new place
        ({"phantom": {"pits_per_day": 1.0}}, "configuration key phantom has moved to sim.phantom"),
        ({"sim": {"geometry": "parallel"}}, "configuration key sim.geometry has moved to geometry.kind"),
        ({"loadcell": {"yield_force_n": 30.0}}, "loadcell.yield_force_n has moved to sim.specimen.yield_force_n"),
        ({"stages": 3}, "stages must be a table"),
    ],
)
def test_bad_values_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(**overrides)
    assert message in str(info.value)


def test_missing_and_malformed_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sim\nseed=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_replace_validates_like_a_file():
    config = load_config()
    assert config.replace(sim={"seed": 3}).sim.seed == 3
    with pytest.raises(ConfigError, match="sim.seed"):
        config.replace(sim={"seed": -1})


def test_default_file_and_dataclasses_agree_key_for_key():
    """No default hides in code: every dataclass field is set by the TOML and vice versa."""

    def keys(cls, prefix=""):
        out = set()
        for name, kind in typing.get_type_hints(cls).items():
            out |= keys(kind, prefix + name + ".") if dataclasses.is_dataclass(kind) else {prefix + name}
        return out

    def toml_keys(table, prefix=""):
        out = set()
        for k, v in table.items():
            out |= toml_keys(v, prefix + k + ".") if isinstance(v, dict) else {prefix + k}
        return out

    assert keys(Config) == toml_keys(tomllib.loads(default_config_text()))


def test_the_journal_goes_under_the_data_directory_unless_set_and_never_into_a_file(tmp_path):
    config = load_config(environment=False, paths={"data_dir": str(tmp_path)})
    assert config.paths.journal_path == tmp_path / "journal"
    elsewhere = load_config(environment=False, paths={"journal_dir": str(tmp_path / "j")})
    assert elsewhere.paths.journal_path == tmp_path / "j"
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="paths.journal_dir: .* is a file, not a directory; set paths.journal_dir"):
        load_config(environment=False, paths={"journal_dir": str(tmp_path / "file")})
