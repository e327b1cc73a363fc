"""Fixtures: the test fleet on SQLite and PostgreSQL, and the CLI run against it.

``shared_fleet`` is populated once per test module and backend, for tests that
only read; ``fleet`` is a fresh copy per test, for tests that write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pytest

from orchestrator.cli.main import main
from orchestrator.clock import utcnow
from orchestrator.db import migrate
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine
from tests.conftest import _admin_conninfo, _counter, _pg_url_for

from .fleet import populate

Run = Callable[..., tuple[int, str, str]]


@dataclass(frozen=True)
class Fleet:
    url: str
    db: Database
    now: datetime  # when it was populated: its ages are measured from here


@pytest.fixture(autouse=True)
def stable_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide, colourless rich output; no config file or key from the machine running the tests."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    for name in ("ORCHESTRATOR_CONFIG", "OPENAI_API_KEY", "ORCHESTRATOR_METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fleet_now() -> datetime:
    return utcnow()


@pytest.fixture
def fleet(database: Database, fleet_now: datetime) -> Database:
    """A fresh fleet (tests/operators/fleet.py) for one test that writes."""
    populate(database, fleet_now)
    return database


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def shared_fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """One fleet per module and backend, for tests that only read it."""
    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fleet') / 'orchestrator.sqlite3'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
    else:
        template: str = request.getfixturevalue("pg_template")
        name = f"orch_f_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        url = _pg_url_for(name)
    db = Database.connect(url)
    now = utcnow()
    populate(db, now)
    yield Fleet(url, db, now)
    db.dispose()
    if name is not None:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli(url: str, capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--database-url", url, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def run(db_url: str, capsys: pytest.CaptureFixture[str]) -> Run:
    """`orchestrator --database-url URL ARGS...` -> (exit code, stdout, stderr)."""
    return cli(db_url, capsys)


@pytest.fixture
def ask(shared_fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> Run:
    """The same, against the shared fleet: for commands that only read."""
    return cli(shared_fleet.url, capsys)


def as_json(text: str) -> Any:
    return json.loads(text)
