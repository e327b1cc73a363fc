"""Shared fixtures: a migrated database on SQLite and on a real PostgreSQL.

PostgreSQL tests use ORCHESTRATOR_TEST_POSTGRES_URL (default: the local server,
postgresql://postgres@127.0.0.1:5432/test). A template database is migrated once
per session and each test gets a fresh copy (CREATE DATABASE ... TEMPLATE), so
every test starts pristine for the cost of a file copy. When the server cannot
be reached the tests are skipped with the reason, unless CI=true or
ORCHESTRATOR_REQUIRE_POSTGRES=1, where that is a failure.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from orchestrator.db import migrate
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine

PG_URL = os.environ.get(
    "ORCHESTRATOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_PG = (
    os.environ.get("CI") == "true" or os.environ.get("ORCHESTRATOR_REQUIRE_POSTGRES") == "1"
)
_counter = itertools.count()


def _admin_conninfo() -> str:
    url = make_url(PG_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_url_for(database: str) -> str:
    url = make_url(PG_URL).set(drivername="postgresql+psycopg", database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    try:
        admin = psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL unreachable at {make_url(PG_URL).render_as_string()}: {exc}"
        if REQUIRE_PG:
            pytest.fail(message)
        pytest.skip(message)
    name = f"orch_tmpl_{os.getpid()}"
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(_pg_url_for(name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _scratch_pg(prefix: str, template: str | None) -> Iterator[str]:
    """A new database (a copy of `template`, or empty), dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{copy}')
    yield _pg_url_for(name)
    with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    with _scratch_pg("orch_t", pg_template) as url:
        yield url


@pytest.fixture
def empty_pg_url(pg_template: str) -> Iterator[str]:
    """A PostgreSQL database with no schema at all."""
    with _scratch_pg("orch_e", None) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'orchestrator.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL, once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database.connect(db_url)
    yield db
    db.dispose()
