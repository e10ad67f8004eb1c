"""The one TOML configuration: documented defaults, overrides, clear refusals."""

from __future__ import annotations

import dataclasses
import tomllib
import typing

import pytest

from nanoscope_daq.config import CONFIG_ENV_VAR, Config, ConfigError, default_config_text, load_config


def test_defaults_match_design_contract():
    config = load_config()
    assert config.epics.prefix == "NS:"
    assert config.sim.geometry in ("cone", "parallel")
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
        ({"sim": {"geometry": "fan"}}, "sim.geometry = 'fan' is invalid: it must be one of 'cone', 'parallel'"),
        ({"epics": {"port": 70000}}, "epics.port = 70000 is invalid"),
        ({"stages": {"sx": {"low_limit": 30.0}}}, "stages.sx.low_limit (30.0) must be below stages.sx.high_limit"),
        ({"stages": {"rot": {"velocity": 1000.0}}}, "stages.rot.velocity (1000.0) exceeds stages.rot.max_velocity"),
        ({"source": {"kv_min": 80.0}}, "source.kv_min must be below source.kv_max"),
        ({"loadcell": {"yield_force_n": 30.0}}, "loadcell.yield_force_n must be below loadcell.failure_force_n"),
        ({"physiology": {"gate_fraction": 1.0}}, "physiology.gate_fraction = 1.0 is invalid"),
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
