"""Engines for SQLite (embedded default) and PostgreSQL (the multi-process backend)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from orchestrator.core import json_text
from orchestrator.db.sqlite_files import (
    SQLITE_BUSY_TIMEOUT_MS,
    check_sqlite_file,
    set_up_connection,
)
from orchestrator.db.urls import hide_password
from orchestrator.db.wal import restore_autocheckpoint
from orchestrator.errors import ConfigError, NotMigrated

# The execution option of a transaction that only reads (`Database.read_transaction`):
# on SQLite it begins deferred, as a read-only engine's do, not IMMEDIATE.
READS_ONLY = "orchestrator_reads_only"


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def normalise_url(url: str) -> URL:
    """Parse a database URL; plain postgresql:// uses psycopg 3."""
    try:
        parsed = make_url(url)
    except Exception:  # its message can quote the URL, password and all: not chained
        raise ConfigError(
            f"ORCHESTRATOR_DATABASE_URL is not a database URL: {hide_password(url)!r} "
            "(expected sqlite:///PATH or postgresql://USER@HOST/DB)"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if not parsed.drivername.startswith(("sqlite", "postgresql")):
        raise ConfigError(
            f"ORCHESTRATOR_DATABASE_URL: unsupported database {parsed.drivername!r} "
            "(use sqlite or postgresql)"
        )
    database = parsed.database or ""
    if parsed.drivername.startswith("sqlite") and database.startswith("~"):
        # SQLite takes `~` literally; people mean their home directory.
        try:
            parsed = parsed.set(database=str(Path(database).expanduser()))
        except RuntimeError:  # `~nosuchuser/...`: no such user, or no home to expand
            raise ConfigError(
                f"ORCHESTRATOR_DATABASE_URL: {hide_password(url)!r}: cannot find the home "
                f"directory of {database.split('/', 1)[0]!r}"
            ) from None
    if parsed.drivername.startswith("sqlite") and parsed.host:
        raise ConfigError(
            f"ORCHESTRATOR_DATABASE_URL: {hide_password(url)!r} names a host; a SQLite URL "
            "has three slashes before a relative path (sqlite:///orchestrator.sqlite3) and four "
            "before an absolute one (sqlite:////var/lib/orchestrator/orchestrator.sqlite3)"
        )
    return parsed


def sqlite_file(url: str) -> Path | None:
    """The file of a file-backed SQLite URL (None for PostgreSQL and in-memory SQLite)."""
    parsed = normalise_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # a URI (`?mode=ro&uri=true`): its path part
        path = unquote(parsed.database.removeprefix("file:").split("?", 1)[0])
        return Path(path) if path and path != ":memory:" else None
    return Path(parsed.database)


def require_existing_file(url: str) -> None:
    """Refuse a SQLite file that is not there: connecting would create an empty one,
    and a mistyped path would then be reported as a database to migrate."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise NotMigrated(
            f"no database at {path}: check ORCHESTRATOR_DATABASE_URL, or create it with "
            "`orchestrator db upgrade`"
        )


def make_engine(url: str, *, pool_size: int = 10, read_only: bool = False) -> Engine:
    """An engine for ``url``. ``read_only``: the database itself refuses every write
    (PostgreSQL read-only transactions, SQLite ``query_only``), and a SQLite
    transaction no longer takes the write lock: for readers such as the console."""
    parsed = normalise_url(url)
    if parsed.drivername.startswith("sqlite"):
        return _sqlite_engine(parsed, read_only=read_only)
    engine = create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        json_serializer=_json_dumps,
        json_deserializer=json_text.loads,
        connect_args={
            "connect_timeout": 5,
            "application_name": "orchestrator",
            **({"options": _read_only_options(parsed)} if read_only else {}),
        },
    )
    event.listen(engine, "connect", _in_utc)
    return engine


def _in_utc(dbapi_connection: Any, _record: object) -> None:
    """Every session in UTC, whatever the server, the database, the role or the host's
    PGTZ say: psycopg reads a ``timestamptz`` in the session's time zone, and east of
    UTC the last second of 9999 (a time the Batch parser accepts) reads as the year
    10000, which no ``datetime`` holds, so every read of that row failed. A statement,
    not a ``-c`` option: libpq sends PGTZ after the options, and it won. Nothing shows
    the session's zone to anyone: every time is UTC in and out (``models.UtcDateTime``)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")  # allowed in a read-only transaction too
    dbapi_connection.commit()


def _read_only_options(url: URL) -> str:
    """libpq's ``options`` for a read-only session: the URL's own (or PGOPTIONS, which
    libpq reads only when a connection gives none), then ours, last so that it wins.
    (Other sessions pass none: libpq takes the URL's, or PGOPTIONS, itself.)"""
    given = url.query.get("options")
    theirs = [given] if isinstance(given, str) else list(given or ())
    if not theirs and os.environ.get("PGOPTIONS"):
        theirs = [os.environ["PGOPTIONS"]]
    return " ".join([*theirs, "-c default_transaction_read_only=on"])


def spare_connections(engine: Engine) -> int:
    """How many more connections a PostgreSQL engine of ``make_engine``'s can open at once
    and still keep a quarter of its most (at least one) free; 0 for SQLite's."""
    pool = engine.pool
    if engine.dialect.name != "postgresql" or not isinstance(pool, QueuePool):
        return 0
    most = 2 * pool.size()  # make_engine: the pool's size and as many again beyond it
    return max(0, most - pool.checkedout() - max(1, most // 4))


def _sqlite_engine(url: URL, *, read_only: bool = False) -> Engine:
    path = sqlite_file(url.render_as_string(hide_password=False))
    if path is not None:
        check_sqlite_file(path)
    engine = create_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=json_text.loads,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        set_up_connection(dbapi_connection, read_only=read_only)

    # A bulk writer may commit without the autocheckpoint (orchestrator.db.wal).
    event.listen(engine, "checkin", restore_autocheckpoint)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A reader that never writes need not wait for, nor block, the one writer.
        reads = read_only or connection.get_execution_options().get(READS_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reads else "BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
