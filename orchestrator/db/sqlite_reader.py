"""Reading a SQLite database through `sqlite3` alone, for `orchestrator status`.

Importing SQLAlchemy takes longer than `status` may take to start and finish
(issue #13: 0.35 s), so on a plain SQLite URL `status` runs its statements, which
are SQL text (`db/summaries.py`, `db/pause_state.py`), on a connection of its own,
set up as the engine sets up every connection (`db/sqlite_files.py`), read-only.

This reader answers only when it can answer exactly as the database layer would:
a plain `sqlite:///PATH` URL naming an existing SQLite file whose schema is at head.
Anything else (PostgreSQL, a URI, a missing file, a schema to upgrade, any error
of the driver) leaves it to the database layer (`Database`), which says what is
wrong as it always has.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import quote

from orchestrator.clock import utcnow
from orchestrator.db.revision import VERSION_SQL, VERSION_TABLE, head_revision, revision_of
from orchestrator.db.sql_text import SQLITE, Run
from orchestrator.db.sqlite_files import (
    SQLITE_BUSY_TIMEOUT_MS,
    check_sqlite_file,
    set_up_connection,
)
from orchestrator.db.urls import plain_sqlite_path
from orchestrator.errors import DatabaseError

__all__ = ["ReaderFailed", "SqliteReader"]


class ReaderFailed(Exception):
    """The driver failed mid-read: read again through the database layer, which
    reports the problem as every command does."""


class SqliteReader:
    dialect = SQLITE

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    @staticmethod
    def open(url: str) -> SqliteReader | None:
        """A reader of the database at `url`; None when it is for the database layer."""
        path = plain_sqlite_path(url)
        if path is None or not path.exists():
            return None
        try:
            check_sqlite_file(path)  # never open a FIFO: it would hang
            # mode=rw: a file gone since the look above is not made anew, empty
            connection = sqlite3.connect(
                f"file:{quote(str(path))}?mode=rw", uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000
            )
        except (DatabaseError, sqlite3.Error):
            return None
        try:
            set_up_connection(connection, read_only=True)
            if _revision(connection) == head_revision():
                return SqliteReader(connection)
        except sqlite3.Error:
            pass
        connection.close()
        return None

    def now(self) -> datetime:
        """SQLite is this host's file: its clock is this host's (as
        `db/server_clock.database_clock` has it)."""
        return utcnow()

    @contextmanager
    def reading(self) -> Iterator[Run]:
        """One read transaction (it takes no lock a writer waits for)."""
        connection = self._connection

        def run(sql: str, params: Mapping[str, object]) -> sqlite3.Cursor:
            return connection.execute(sql, params)  # its rows stepped to as iterated

        try:
            connection.execute("BEGIN")
            try:
                yield run
            finally:
                connection.execute("ROLLBACK")  # it wrote nothing
        except sqlite3.Error as exc:
            raise ReaderFailed(str(exc)) from exc

    def close(self) -> None:
        self._connection.close()


def _revision(connection: sqlite3.Connection) -> str | None:
    """The database's schema revision, as `db/revision.current_revision` reads it."""
    if not connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
    ).fetchall():
        return None
    return revision_of(row[0] for row in connection.execute(VERSION_SQL))
