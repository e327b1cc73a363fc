"""Is the schema current? Answered without alembic, which every command would otherwise
import at start-up: the head is read from the revision files, the database's revision
from the `alembic_version` table. `orchestrator.db.migrate` (alembic) changes schemas."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.db.urls import shown_url
from orchestrator.errors import DatabaseUnavailable, NotMigrated

if TYPE_CHECKING:
    from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
VERSION_TABLE = "alembic_version"  # alembic's default, which migrations/env.py keeps
VERSION_SQL = f"SELECT version_num FROM {VERSION_TABLE}"

_ASSIGNED = re.compile(r"^(down_revision|revision)\b[^=\n]*=(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"""["']([^"']+)["']""")


class SchemaState(StrEnum):
    """A database's schema as this release sees it."""

    CURRENT = "current"  # at this release's head
    BEHIND = "behind"  # empty, or at a revision this release knows: `db upgrade` fixes it
    NEWER = "newer"  # at a revision this release does not know: a newer release migrated it


@cache
def _revision_files() -> tuple[frozenset[str], str]:
    """Every revision the files name, and the one no other builds on (the head)."""
    revisions: set[str] = set()
    built_on: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in _ASSIGNED.findall(path.read_text(encoding="utf-8")):
            found = _QUOTED.findall(value)
            (revisions if name == "revision" else built_on).update(found)
    heads = revisions - built_on
    if len(heads) != 1:
        raise RuntimeError(f"{MIGRATIONS_DIR}/versions has {len(heads)} heads: {sorted(heads)}")
    return frozenset(revisions), heads.pop()


def head_revision() -> str:
    """The one revision no other revision file builds on (tests/db/test_migrations.py
    checks that alembic names the same)."""
    return _revision_files()[1]


def schema_state(current: str | None) -> SchemaState:
    """Where the database's revision (``current_revision``) stands to this release's."""
    known, head = _revision_files()
    if current == head:
        return SchemaState.CURRENT
    if current is None or all(r in known for r in current.split(", ")):
        return SchemaState.BEHIND
    # Not one of ours: a newer release wrote it (or another branch). `db upgrade` with
    # this release cannot move it (alembic does not know it) and must not be advised.
    return SchemaState.NEWER


def mismatch(current: str | None) -> str | None:
    """What is wrong with the schema and what to do, in words; None when it is current."""
    state, head = schema_state(current), head_revision()
    if state is SchemaState.CURRENT:
        return None
    if state is SchemaState.NEWER:
        return (
            f"at revision {current}, which this release does not know: a newer release "
            f"migrated it (this release's newest is {head}); run the newer release"
        )
    where = "empty (no schema)" if current is None else f"at revision {current}"
    return f"{where}, but this version needs revision {head}: run `orchestrator db upgrade`"


def revision_of(versions: Iterable[str]) -> str | None:
    """What the rows of `VERSION_SQL` say (None: no revision)."""
    return ", ".join(sorted(versions)) or None


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision; None for an empty database."""
    # SQLAlchemy here, not at the top: `status` on SQLite reads the revision without it
    # (db/sqlite_reader.py), with the head from `head_revision`.
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import OperationalError

    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None
            return revision_of(connection.execute(text(VERSION_SQL)).scalars())
    except OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database: {exc.orig}") from exc


def require_current(engine: Engine) -> None:
    """Refuse to run on a database whose schema is not at head."""
    wrong = mismatch(current_revision(engine))
    if wrong is not None:
        raise NotMigrated(f"the database {shown_url(engine.url)} is {wrong}")


def refuse_newer(engine: Engine) -> None:
    """Refuse to migrate a database a newer release migrated: alembic would fail on its
    unknown revision with a message that reads like a typo in ``--revision``."""
    current = current_revision(engine)
    if schema_state(current) is SchemaState.NEWER:
        raise NotMigrated(f"the database {shown_url(engine.url)} is {mismatch(current)}")
