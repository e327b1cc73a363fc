"""Every setting is checked at load against its allowed range, and related settings
against each other: a value out of range is a ConfigError naming its variable."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import pytest

from orchestrator.errors import ConfigError
from orchestrator.settings import RELATIONS, Range, Settings, env_name, load_settings

ANY_DATABASE = "sqlite:////tmp/orchestrator-settings-test.sqlite3"
NUMERIC = [
    f
    for f in fields(Settings)
    if any(kind in str(f.type) for kind in ("int", "float")) and "Secret" not in str(f.type)
]


def test_every_numeric_setting_declares_its_range() -> None:
    assert NUMERIC, "no numeric settings found"
    undeclared = [f.name for f in NUMERIC if not isinstance(f.metadata.get("range"), Range)]
    assert undeclared == []


def _outside(limits: Range, is_int: bool) -> list[float]:
    below = limits.low if limits.above else limits.low - 1
    above = limits.high + 1
    values = [below, above, limits.high * 1e6]
    if not is_int:
        values += [math.nan, math.inf, -math.inf, limits.low - 1e-9 if not limits.above else 0]
    return values


CASES = [
    (f.name, value)
    for f in NUMERIC
    for value in _outside(f.metadata["range"], str(f.type).startswith("int"))
]


@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{n}={v}" for n, v in CASES])
def test_every_setting_refuses_values_out_of_its_range(name: str, value: float) -> None:
    whole = math.isfinite(value) and float(value).is_integer()
    raw = str(int(value)) if whole else str(value)  # as typed in the environment
    with pytest.raises(ConfigError, match=env_name(name)):
        load_settings(environ={"ORCHESTRATOR_DATABASE_URL": ANY_DATABASE, env_name(name): raw})


@pytest.mark.parametrize("name", [f.name for f in NUMERIC])
def test_every_setting_takes_its_limits(name: str) -> None:
    limits: Range = next(f for f in NUMERIC if f.name == name).metadata["range"]
    related = {n for s, la, _, _ in RELATIONS if name in (s, la) for n in (s, la)} - {name}
    for value in [limits.high] + ([] if limits.above else [limits.low]):
        change: dict[str, Any] = {name: value}
        try:
            Settings(database_url=ANY_DATABASE, **change)
        except ConfigError as exc:  # only a relation to another setting's default may object
            assert related and any(env_name(other) in str(exc) for other in related), exc


@pytest.mark.parametrize(
    ("smaller", "larger", "strictly"), [(s, la, st) for s, la, st, _ in RELATIONS]
)
def test_every_relation_between_settings_is_enforced(
    smaller: str, larger: str, strictly: bool
) -> None:
    high = getattr(Settings(database_url=ANY_DATABASE), larger)
    inverted: dict[str, Any] = {smaller: high * 2, larger: high}
    equal: dict[str, Any] = {smaller: high, larger: high}
    with pytest.raises(ConfigError, match=f"{env_name(smaller)}.*{env_name(larger)}"):
        Settings(database_url=ANY_DATABASE, **inverted)
    if strictly:
        with pytest.raises(ConfigError, match=env_name(larger)):
            Settings(database_url=ANY_DATABASE, **equal)
    else:
        Settings(database_url=ANY_DATABASE, **equal)
