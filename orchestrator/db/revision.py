"""Is the schema current? Answered without alembic, which every command would otherwise
import at start-up: the head is read from the revision files, the database's revision
from the `alembic_version` table. `orchestrator.db.migrate` (alembic) changes schemas."""

from __future__ import annotations

import re
from collections.abc import Iterable
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


@cache
def head_revision() -> str:
    """The one revision no other revision file builds on (tests/db/test_migrations.py
    checks that alembic names the same)."""
    revisions: set[str] = set()
    built_on: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in _ASSIGNED.findall(path.read_text(encoding="utf-8")):
            found = _QUOTED.findall(value)
            (revisions if name == "revision" else built_on).update(found)
    heads = revisions - built_on
    if len(heads) != 1:
        raise RuntimeError(f"{MIGRATIONS_DIR}/versions has {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


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
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        where = "empty (no schema)" if current is None else f"at revision {current}"
        raise NotMigrated(
            f"the database {shown_url(engine.url)} is {where}, "
            f"but this version needs revision {head}: run `orchestrator db upgrade`"
        )
