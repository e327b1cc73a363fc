"""SQLite WAL checkpoints off a bulk writer's path.

A COMMIT that leaves the WAL longer than ``wal_autocheckpoint`` pages (1,000 by
default) copies the WAL into the database file and fsyncs both before it
returns. Storing a result file, every 2,000-line chunk is about 1,000 pages, so
every chunk's COMMIT did that: a third of the ingest's wall time on this
host's disk. A bulk writer instead commits with the autocheckpoint off
(``without_autocheckpoint``) and runs the checkpoint in a thread
(``BackgroundCheckpoint``) while it reads and parses its next chunk; it waits
for that checkpoint before its next transaction, so the WAL is reset there and
stays about one chunk long.

The checkpoint is PASSIVE: it never waits for, nor blocks, other connections
or processes; what it cannot copy yet, the next checkpoint (ours or any
connection's autocheckpoint) does. It changes nothing about durability: the
committed transaction is in the WAL either way.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = [
    "DEFAULT_AUTOCHECKPOINT",
    "BackgroundCheckpoint",
    "restore_autocheckpoint",
    "without_autocheckpoint",
]

log = logging.getLogger(__name__)

DEFAULT_AUTOCHECKPOINT = 1000  # pages; SQLite's own default
_OFF = "orchestrator_wal_autocheckpoint_off"  # in the pool entry's info while it is off


def without_autocheckpoint(connection: Connection) -> None:
    """This transaction's COMMIT does not checkpoint. The pool turns the autocheckpoint
    back on when the connection is checked in (``restore_autocheckpoint``)."""
    connection.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
    connection.connection.info[_OFF] = True


def restore_autocheckpoint(
    dbapi_connection: DBAPIConnection | None, entry: ConnectionPoolEntry
) -> None:
    """The pool's check-in hook: a connection goes back with SQLite's default."""
    if entry.info.pop(_OFF, False) and dbapi_connection is not None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA wal_autocheckpoint={DEFAULT_AUTOCHECKPOINT}")
        cursor.close()


class BackgroundCheckpoint:
    """PASSIVE checkpoints of one SQLite file, each in a thread of its own.

    ``start`` after a COMMIT made without the autocheckpoint; ``wait`` before the
    next write transaction (and at the end of a bulk write). Safe to share between
    threads: ``wait`` waits for every checkpoint started before it.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._running: list[threading.Thread] = []

    def start(self) -> None:
        thread = threading.Thread(target=self._checkpoint, name="wal-checkpoint", daemon=True)
        with self._lock:
            self._running = [t for t in self._running if t.is_alive()]
            thread.start()
            self._running.append(thread)

    def wait(self) -> None:
        with self._lock:
            running = list(self._running)
        for thread in running:
            thread.join()

    def _checkpoint(self) -> None:
        try:
            connection = self._engine.raw_connection()  # autocommit: the engine's connect hook
            try:
                connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                connection.close()
        except Exception as exc:  # the next checkpoint, or an autocheckpoint, copies it
            log.debug("background WAL checkpoint failed: %s", exc)
