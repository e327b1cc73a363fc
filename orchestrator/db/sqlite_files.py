"""A SQLite database file and a connection to it, set up the one way every process
uses: by SQLAlchemy's engine (`db/engine.py`) and by `status`'s own reader
(`db/sqlite_reader.py`), which runs without SQLAlchemy."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from orchestrator.errors import DatabaseError

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "SQLITE_HEADER", "check_sqlite_file", "set_up_connection"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def check_sqlite_file(path: Path) -> None:
    """Refuse, naming the path, what SQLite would fail on with an obscure error (or, for
    a FIFO, hang on): a directory, a device, a file that is not a SQLite database, a
    directory for a new file that cannot be made. A missing or empty file is a new
    database."""
    where = f"ORCHESTRATOR_DATABASE_URL names {path}"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(
                f"{where}: cannot create its directory {path.parent} ({exc.strerror or exc})"
            ) from None
        return
    except OSError as exc:
        raise DatabaseError(f"{where}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise DatabaseError(f"{where}, which is a directory, not a SQLite database file")
    if not stat.S_ISREG(mode):
        raise DatabaseError(f"{where}, which is not a regular file (a FIFO, socket or device)")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise DatabaseError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if header and header != SQLITE_HEADER:
        raise DatabaseError(f"{where}, which is not a SQLite database (its first bytes say so)")


# A commit is in the WAL, not yet on the disk (the WAL is synced at checkpoints): a
# process crash loses nothing, a power cut may lose the last commits. What must be on
# the disk before something irreversible is done runs in `Database.durable_transaction`.
SYNCHRONOUS = "NORMAL"


def set_up_connection(connection: sqlite3.Connection, *, read_only: bool) -> None:
    """What every new connection runs first."""
    # Take transaction control from the driver so every transaction can begin as its
    # caller says (IMMEDIATE for writers: SQLite has one writer, and a deferred
    # transaction that reads then writes fails with "database is locked" instead of
    # waiting).
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    if read_only:
        cursor.execute("PRAGMA query_only=ON")
    cursor.close()
