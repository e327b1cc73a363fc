"""SQLite WAL checkpoints off a bulk writer's path.

A COMMIT that leaves the WAL longer than ``wal_autocheckpoint`` pages (1,000 by
default) copies the WAL into the database file and fsyncs both before it
returns. Storing a result file, every 2,000-line chunk is about 1,000 pages, so
every chunk's COMMIT did that: a third of the ingest's wall time on this
host's disk. A bulk writer instead commits with the autocheckpoint off
(``without_autocheckpoint``) and a thread of its own checkpoints
(``BackgroundCheckpoint``) while it reads, parses and writes its next chunks.
Every few commits (``WAL_COMMITS``) the writer waits for those checkpoints
before its next transaction, so the WAL is reset there and stays a few chunks
long.

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
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

__all__ = [
    "DEFAULT_AUTOCHECKPOINT",
    "BackgroundCheckpoint",
    "restore_autocheckpoint",
    "without_autocheckpoint",
]

log = logging.getLogger(__name__)

DEFAULT_AUTOCHECKPOINT = 1000  # pages; SQLite's own default
WAL_COMMITS = 4  # a bulk writer's commits between waits for its checkpoints
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
    """PASSIVE checkpoints of one SQLite file, by one thread on a connection of its own,
    for as long as a bulk writer runs (``close`` ends it).

    ``start`` after a COMMIT made without the autocheckpoint asks for a checkpoint of
    everything committed so far; ``wait`` (before the next write transaction) returns
    once every checkpoint asked for has run. One thread for the whole write, not one
    per chunk: starting a thread and checking out a connection cost more than the
    checkpoint of a small chunk.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._ready = threading.Condition()
        self._asked = 0  # checkpoints asked for
        self._done = 0  # of those, run (or given up)
        self._caught_up = 0  # asked for when a writer last waited for them all
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._ready:
            if self._closed:
                return
            self._asked += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="wal-checkpoint", daemon=True
                )
                self._thread.start()
            self._ready.notify_all()

    def before_write(self) -> None:
        """Before a write transaction: every ``WAL_COMMITS`` commits, wait for the
        checkpoints asked for, so this transaction restarts the WAL from its beginning
        (SQLite does when the WAL is wholly copied); in between the thread checkpoints
        while the writer writes. The WAL stays about ``WAL_COMMITS`` commits long."""
        with self._ready:
            if self._asked - self._caught_up < WAL_COMMITS:
                return
        self.wait()

    def wait(self) -> None:
        """Until every checkpoint asked for has run."""
        with self._ready:
            while self._done < self._asked:
                self._ready.wait()
            self._caught_up = self._asked

    def close(self) -> None:
        """Run what was asked for, then end the thread."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        connection = None
        try:
            connection = self._engine.raw_connection()  # autocommit: the engine's connect hook
            while True:
                with self._ready:
                    while self._done == self._asked and not self._closed:
                        self._ready.wait()
                    if self._done == self._asked:
                        return
                    asked = self._asked
                self._checkpoint(connection)
                with self._ready:
                    self._done = asked
                    self._ready.notify_all()
        except Exception as exc:  # no connection: the autocheckpoint of later commits copies it
            log.debug("background WAL checkpoints stopped: %s", exc)
        finally:
            with self._ready:
                self._done = self._asked
                self._closed = True
                self._ready.notify_all()
            if connection is not None:
                connection.close()

    @staticmethod
    def _checkpoint(connection: PoolProxiedConnection) -> None:
        try:
            connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # the next checkpoint, or an autocheckpoint, copies it
            log.debug("background WAL checkpoint failed: %s", exc)
