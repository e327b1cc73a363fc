"""Result files and their rows, written so that a crash anywhere leaves them exactly right.

Each chunk of lines is one transaction: its rows, its unreadable lines, and the
file's checkpoint (``lines_committed``) move together or not at all. The chunk
states which checkpoint it starts from; one UPDATE at its end moves the
checkpoint only if the stored one still says so (and locks the file's row until
the commit), and the chunk commits only while the batch's lease is still ours;
the unique (batch_id, custom_id) constraint is the last line of defence. So a
restart (or a second process) resumes at the checkpoint and nothing is stored
twice or skipped.

A download's chunks commit on connections held for it (``chunk_connections``):
no pool checkout, ping or ORM session per chunk, the few statements around the
rows prepared once. On PostgreSQL a second one when the pool can spare it, the
two taken in turn, so one chunk's COPY streams while the last one drains and
commits (the server stores rows on two backends at once); each chunk's
transaction waits for the one before it to commit (``after``) before it moves
the checkpoint, so they commit in order. Rows go in as tuples, below SQLAlchemy
(whose per-row parameter processing cost more than parsing the lines): on SQLite
through sqlite3's ``executemany``; on PostgreSQL by COPY straight into
``batch_results``. COPY cannot skip conflicts, but the checkpoint makes a
duplicate rare (a file that repeats a custom_id, or one id in both files), so
only then is the chunk's transaction rolled back and the chunk stored again, in
another, with ON CONFLICT DO NOTHING (no savepoint: it cost every chunk two
round trips); the chunk's rows are read again for that (``Chunk.rows``). COPY
streams: a chunk's rows may be pulled from the download as its lines arrive, so
the server stores rows while later ones are still being downloaded and parsed.
The body arrives as JSON text (the column is ``json``: stored as sent), as UTF-8
bytes (``bytes`` or ``msgspec.Raw``) when the rows carry it so (``json_bytes``).

On SQLite nothing streams, so a chunk's lines are parsed before its transaction
takes the one write lock (other writers wait less), and its COMMIT leaves the
WAL checkpoint to a thread of the download's that runs while the next chunks
are read, parsed and written (``orchestrator.db.wal``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import msgspec
import psycopg
from psycopg import postgres, pq
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from sqlalchemy import Connection, Insert, Update, bindparam, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from orchestrator.core.harvest import FileState
from orchestrator.core.result_lines import RESULT_COLUMNS, LineError, Row, printable
from orchestrator.db.batches import event_row
from orchestrator.db.database import Database
from orchestrator.db.leases import Leases
from orchestrator.db.models import Batch, BatchResult, ResultFile, ResultLineError, table_of
from orchestrator.db.wal import BackgroundCheckpoint, without_autocheckpoint
from orchestrator.errors import DatabaseError

__all__ = [
    "Chunk",
    "ChunkConnection",
    "ChunkCounts",
    "FileProgress",
    "FileTotals",
    "LeaseLost",
    "ResultStore",
    "pg_copy_types",
]

_ERROR_CHARS = 2000


_COLUMNS = ", ".join(RESULT_COLUMNS)
_RESULTS = BatchResult.__tablename__
_SQLITE_INSERT = (
    f"INSERT INTO {_RESULTS} ({_COLUMNS}) VALUES ({', '.join('?' for _ in RESULT_COLUMNS)}) "
    "ON CONFLICT DO NOTHING"
)
_PG_BODY = "%s::json"  # as the column, so as COPY stores it: jsonb refuses \u0000 and reorders
# Binary: no field is escaped by the client or unescaped by the server (a body is
# mostly one long JSON string): 10-16% less of the server's CPU than text, 5-10% less
# of ours (docs/benchmarks.md).
_PG_COPY = f"COPY {_RESULTS} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
CHUNK_LOCK_TIMEOUT = "60s"  # see _insert_rows
_PG_INSERT = (
    f"INSERT INTO {_RESULTS} ({_COLUMNS}) VALUES "
    f"({', '.join(_PG_BODY if c == 'body' else '%s' for c in RESULT_COLUMNS)}) "
    "ON CONFLICT DO NOTHING"
)


class LeaseLost(DatabaseError):
    """Another process holds this batch now (our lease expired): stop, it carries on."""


@dataclass(frozen=True)
class FileProgress:
    file_id: str
    state: FileState
    lines_committed: int
    attempts: int
    shared_with: tuple[str, ...] = ()  # first sight: other batches that name this file too


@dataclass(frozen=True)
class FileTotals:
    """Facts about the whole file, known once the stream ended cleanly."""

    bytes: int
    lines: int
    sha256: str
    # the download vouched for its end (a length or chunked framing): without it a cut
    # at a line's end looks whole (core/cleanup.py)
    end_checked: bool


@dataclass(kw_only=True)
class Chunk:
    """One transaction's worth of a file: its lines ``from_line + 1 .. to_line``.

    ``rows`` may be lazy (pulled from a download as its lines arrive), adding to
    ``errors`` and setting ``to_line`` and ``totals`` as it is consumed: those are
    read only once the rows are all consumed. It must be iterable again from the
    start (a list, or an iterable that parses its lines again, its ``errors`` anew):
    a COPY that meets a stored custom_id stores the chunk again, skipping those."""

    batch_id: str
    file_id: str
    from_line: int  # the checkpoint it starts from
    to_line: int  # the checkpoint it moves to
    rows: Iterable[Row]
    errors: list[LineError]
    totals: FileTotals | None = None  # the last chunk: the file is done with it


@dataclass(frozen=True)
class ChunkCounts:
    inserted: int
    duplicates: int
    malformed: int


class _Counted:
    """Counts the rows of an iterable as they go by."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._rows = rows
        self.n = 0

    def __iter__(self) -> Iterator[Row]:
        for row in self._rows:
            self.n += 1
            yield row

    def rows(self) -> Iterator[Row]:
        return iter(self)


class ResultStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert_errors: Insert = db.insert_ignoring_conflicts(table_of(ResultLineError))
        self._leases = Leases(db, table_of(Batch), "id", source="reconciler")  # the batch's
        # psycopg refuses NUL in text, and the raw text of a line is kept verbatim otherwise
        self._nul_unsafe = db.is_postgres
        # a SQLite file: chunks commit without the autocheckpoint, checkpointed in a thread
        database = db.engine.url.database or ""  # (one per download: chunk_connection)
        self._file_backed = not db.is_postgres and database not in ("", ":memory:")
        self._advance, self._finish = _advance_statements()

    @property
    def nul_unsafe(self) -> bool:
        return self._nul_unsafe

    @property
    def json_bytes(self) -> bool:
        """Rows may carry the body as UTF-8 bytes (``iter_rows(json_bytes=True)``): the
        driver sends them as the text they are (PostgreSQL); sqlite3 would store a blob."""
        return self.db.is_postgres

    # --- files ------------------------------------------------------------------------

    def begin_file(self, *, batch_id: str, file_id: str, kind: str, now: datetime) -> FileProgress:
        """The file's row (created pending on first sight), with one more attempt counted.

        Each batch has its own row for a file, even when another batch names the same
        file id; on first sight that is an anomaly event on each batch, naming the others.
        """
        with self.db.transaction() as session:
            self.db.serialize_on(session, f"result_file:{file_id}")  # to see a sharer's row
            session.execute(
                self._file_insert(),
                [
                    {
                        "file_id": file_id,
                        "batch_id": batch_id,
                        "kind": kind,
                        "state": FileState.PENDING.value,
                        "lines_committed": 0,
                        "results": 0,
                        "malformed": 0,
                        "duplicates": 0,
                        "attempts": 0,
                        "started_at": now,
                    }
                ],
            )
            key = {"batch_id": batch_id, "file_id": file_id}
            row = session.get(ResultFile, key, with_for_update=True)
            assert row is not None
            if row.state == FileState.PENDING:
                row.attempts += 1
            shared: tuple[str, ...] = ()
            if row.attempts == 1 and row.state == FileState.PENDING:  # first sight
                shared = self._shared(session, batch_id, file_id, kind, now)
            return FileProgress(
                file_id, FileState(row.state), row.lines_committed, row.attempts, shared
            )

    @staticmethod
    def _shared(
        session: Session, batch_id: str, file_id: str, kind: str, now: datetime
    ) -> tuple[str, ...]:
        others = tuple(
            session.scalars(
                select(ResultFile.batch_id)
                .where(ResultFile.file_id == file_id, ResultFile.batch_id != batch_id)
                .order_by(ResultFile.batch_id)
                .limit(5)
            )
        )
        sharers = [(batch_id, others)] if others else []
        for named, also in sharers + [(other, (batch_id,)) for other in others]:
            detail = (
                f"shared_file: the server names {kind} file {file_id} for this batch and "
                f"for {', '.join(also)}: each batch stores the file's lines as its own; "
                "check which batch the file belongs to"
            )
            session.add(event_row(named, "anomaly", now, "reconciler", detail=detail))
        return others

    def _file_insert(self) -> Insert:
        return self.db.insert_ignoring_conflicts(table_of(ResultFile))

    def note_failure(self, batch_id: str, file_id: str, *, error: str) -> None:
        """A download that did not finish; the checkpoint keeps what it stored."""
        with self.db.transaction() as session:
            session.execute(
                update(ResultFile)
                .where(ResultFile.batch_id == batch_id, ResultFile.file_id == file_id)
                .values(last_error=error[:_ERROR_CHARS])
                .execution_options(synchronize_session=False)
            )

    def mark_missing(self, batch_id: str, file_id: str, *, error: str, now: datetime) -> None:
        """The server says the file does not exist (404): what it held cannot be had."""
        with self.db.transaction() as session:
            session.execute(
                update(ResultFile)
                .where(
                    ResultFile.batch_id == batch_id,
                    ResultFile.file_id == file_id,
                    ResultFile.state == FileState.PENDING.value,
                )
                .values(state=FileState.MISSING.value, last_error=error[:_ERROR_CHARS], done_at=now)
                .execution_options(synchronize_session=False)
            )

    def files(self, batch_id: str) -> list[ResultFile]:
        with self.db.transaction() as session:
            return list(
                session.scalars(
                    select(ResultFile)
                    .where(ResultFile.batch_id == batch_id)
                    .order_by(ResultFile.kind.desc())
                )
            )

    # --- chunks -----------------------------------------------------------------------

    @contextmanager
    def chunk_connections(self) -> Iterator[list[ChunkConnection]]:
        """The connections for a download's chunks (``commit_chunk(..., on=...)``), each
        chunk its own transaction, each connection used from one thread at a time.

        On PostgreSQL a second one when the pool can spare it (``spare_connection``): a
        chunk's COPY streams on one while the chunk before it drains and commits on the
        other, so the server stores rows on two backends at once (with one connection
        it sat idle at every chunk's end). One on SQLite, whose one writer takes one
        transaction at a time.
        """
        with ExitStack() as held:
            connections = [self._chunk_connection(held)]
            if self.db.is_postgres:
                spare = held.enter_context(self.db.spare_connection())
                if spare is not None:
                    connections.append(ChunkConnection(spare, None))
            yield connections

    @contextmanager
    def chunk_connection(self) -> Iterator[ChunkConnection]:
        """One connection for chunks committed one after another."""
        with ExitStack() as held:
            yield self._chunk_connection(held)

    def _chunk_connection(self, held: ExitStack) -> ChunkConnection:
        connection = held.enter_context(self.db.held_connection())
        checkpoints = BackgroundCheckpoint(self.db.engine) if self._file_backed else None
        if checkpoints is not None:
            held.callback(checkpoints.close)
        return ChunkConnection(connection, checkpoints)

    def commit_chunk(
        self,
        *,
        chunk: Chunk,
        owner: str,
        lease_until: datetime,
        now: datetime | None = None,
        on: ChunkConnection | None = None,
        after: Callable[[], None] | None = None,
    ) -> ChunkCounts:
        """Store the chunk's lines and move the file's checkpoint, atomically.

        ``chunk.rows`` may be lazy and add to ``chunk.errors`` as it is consumed (it is,
        first). With ``chunk.totals`` this is the last chunk: the file is marked done
        (at ``now``) in the same transaction. Raises ``LeaseLost`` (nothing stored) when
        the checkpoint moved or the batch's lease is no longer ``owner``'s; a chunk
        that commits extends that lease to ``lease_until``. ``on``: a connection held
        for the file's chunks (``chunk_connections``); without it, one is taken for this.
        ``after``: called in the transaction, its rows sent, before the checkpoint moves;
        it waits for the chunk before this one (in flight on another connection) to
        commit, and raises (rolling this one back) if it did not.
        """
        if on is None:
            with self.chunk_connection() as held:
                return self.commit_chunk(
                    chunk=chunk, owner=owner, lease_until=lease_until, now=now, on=held, after=after
                )
        checkpoints = on.checkpoints
        rows: Iterable[Row] = chunk.rows
        if checkpoints is not None:
            rows = list(rows)  # parsed before the write lock is taken
            checkpoints.before_write()  # every few chunks: the WAL restarts from its beginning
        try:
            counts = self._commit(on, chunk, rows, owner, lease_until, now, after, copy=True)
        except _CopyRefused:  # rolled back; again, skipping the stored ids
            if iter(chunk.rows) is chunk.rows:  # an iterator: the rows are gone
                raise TypeError("Chunk.rows must be iterable again, not an iterator") from None
            counts = self._commit(on, chunk, chunk.rows, owner, lease_until, now, after, copy=False)
        if checkpoints is not None:
            checkpoints.start()
            if chunk.totals is not None:  # the file is done: leave no thread behind
                checkpoints.wait()
        return counts

    def _commit(
        self,
        on: ChunkConnection,
        chunk: Chunk,
        rows: Iterable[Row],
        owner: str,
        lease_until: datetime,
        now: datetime | None,
        after: Callable[[], None] | None,
        *,
        copy: bool,
    ) -> ChunkCounts:
        """One transaction: the rows, the line errors, the checkpoint (checked and moved
        in one statement, once the chunk before has committed) and, last, so the batch
        row is locked only briefly, the fence."""
        connection = on.connection
        with connection.begin():
            counted = _Counted(rows)
            inserted = self._insert_rows(connection, counted.rows(), copy=copy)
            counts = ChunkCounts(inserted, counted.n - inserted, len(chunk.errors))
            self._insert_line_errors(connection, chunk)
            if after is not None:
                after()
            self._advance_file(connection, chunk, counts, now)
            if not self._leases.fence(connection, owner, chunk.batch_id, until=lease_until):
                raise LeaseLost(f"batch {chunk.batch_id}: the lease is no longer held by {owner}")
            if on.checkpoints is not None and not on.autocheckpoint_off:
                without_autocheckpoint(connection)  # the pool restores it at check-in
                on.autocheckpoint_off = True
        return counts

    def _insert_rows(self, connection: Connection, rows: Iterator[Row], *, copy: bool) -> int:
        driver = connection.connection.driver_connection  # the DBAPI connection, in our transaction
        assert driver is not None
        if not self.db.is_postgres:  # sqlite3, straight: nothing for SQLAlchemy to add per row
            return int(driver.executemany(_SQLITE_INSERT, rows).rowcount)
        # Safe to let go of: the chunk and its checkpoint commit together, so a chunk
        # lost in a server crash is simply stored again; and any later synchronous
        # commit (the harvest's end) flushes the WAL of this one first. The lock
        # timeout: two chunks in flight wait on each other partly in this process
        # (``after``), where the server's deadlock detector cannot see; should two
        # processes ever store one file at once (a lease taken over from a stalled
        # one), a row lock waited on this long ends the chunk (DatabaseBusy) instead.
        driver.execute(
            f"SET LOCAL synchronous_commit TO OFF; SET LOCAL lock_timeout TO '{CHUNK_LOCK_TIMEOUT}'"
        )
        if not copy:
            with driver.cursor() as cursor:
                for body_type in (bytes, msgspec.Raw):
                    cursor.adapters.register_dumper(body_type, _JsonText)
                cursor.executemany(_PG_INSERT, list(rows))
                return int(cursor.rowcount)
        sent = 0
        try:
            with driver.cursor() as cursor:
                cursor.adapters.register_dumper(None, _JsonBinary)  # this cursor's only
                with cursor.copy(_PG_COPY) as stream:
                    stream.set_types(pg_copy_types())
                    write_row = stream.write_row
                    for row in rows:  # parsed as they go: the server stores while we parse
                        write_row(row)
                        sent += 1
        except psycopg.errors.UniqueViolation:
            # the chunk repeats a stored custom_id: this transaction is lost, store it
            # again in another, skipping those (no savepoint: rare, and it costs per chunk)
            for _ in rows:  # the server may refuse before every row was sent: read them all
                pass
            raise _CopyRefused from None
        return sent

    def _insert_line_errors(self, connection: Connection, chunk: Chunk) -> None:
        if not chunk.errors:
            return
        connection.execute(
            self._insert_errors,
            [
                {
                    "file_id": chunk.file_id,
                    "line_number": e.line_number,
                    "batch_id": chunk.batch_id,
                    "raw": printable(e.raw),
                    "error": e.error,
                }
                for e in chunk.errors
            ],
        )

    def _advance_file(
        self, connection: Connection, chunk: Chunk, counts: ChunkCounts, now: datetime | None
    ) -> None:
        """Move the checkpoint and the counts if it still is where the chunk starts (else
        ``LeaseLost``: another process stored these lines); with the totals, the file is
        done. The row stays locked until the chunk commits."""
        values: dict[str, object] = {
            "k_batch": chunk.batch_id,
            "k_file": chunk.file_id,
            "k_from": chunk.from_line,
            "k_to": chunk.to_line,
            "k_results": counts.inserted,
            "k_malformed": counts.malformed,
            "k_duplicates": counts.duplicates,
        }
        statement = self._advance
        totals = chunk.totals
        if totals is not None:
            statement = self._finish
            values.update(
                k_bytes=totals.bytes,
                k_lines=totals.lines,
                k_sha256=totals.sha256,
                k_end_checked=totals.end_checked,
                k_done_at=now,
            )
        if connection.execute(statement, values).rowcount == 1:
            return
        current = connection.scalar(
            select(ResultFile.lines_committed).where(
                ResultFile.batch_id == chunk.batch_id,
                ResultFile.file_id == chunk.file_id,
                ResultFile.state == FileState.PENDING.value,
            )
        )
        raise LeaseLost(
            f"file {chunk.file_id}: checkpoint is {current}, not {chunk.from_line}: "
            "another process is storing it"
        )


class ChunkConnection:
    """A connection held for one download's chunks (``ResultStore.chunk_connection``)."""

    def __init__(self, connection: Connection, checkpoints: BackgroundCheckpoint | None) -> None:
        self.connection = connection
        # a SQLite file: chunks commit without the autocheckpoint, checkpointed in a thread
        self.checkpoints = checkpoints
        self.autocheckpoint_off = False  # set on its first chunk


class _JsonText(Dumper):
    """A body that is already JSON text, as UTF-8 bytes, sent as that text (not bytea)."""

    format = pq.Format.TEXT

    def dump(self, obj: bytes) -> Buffer:
        # a copy: a text parameter is read up to its NUL, and a msgspec.Raw is a view
        # of the middle of its line
        return bytes(obj)


class _JsonBinary(Dumper):
    """A body in a binary COPY: json's binary form is its text, so the UTF-8 bytes as
    they are (``bytes`` or ``msgspec.Raw``: any buffer), or a str's UTF-8."""

    format = pq.Format.BINARY
    oid = postgres.types["json"].oid

    def dump(self, obj: bytes | str) -> Buffer:
        return obj.encode() if isinstance(obj, str) else memoryview(obj)  # not copied


@cache
def pg_copy_types() -> tuple[str, ...]:
    """The PostgreSQL type of each column a chunk's COPY fills, from the table: a binary
    COPY must send each value in its column's exact form (int4 is four bytes)."""
    table, dialect = table_of(BatchResult), postgresql.dialect()  # type: ignore[no-untyped-call]
    return tuple(
        table.c[name].type.compile(dialect=dialect).split("(")[0].lower() for name in RESULT_COLUMNS
    )


class _CopyRefused(Exception):
    """COPY met a custom_id already stored; its transaction was rolled back, and every
    row of the chunk was read (a lazy chunk knows where it ends)."""


def _advance_statements() -> tuple[Update, Update]:
    """The checkpoint's move (checked: it must still be at ``k_from``), and the same
    for the last chunk, which marks the file done with its totals."""
    files = table_of(ResultFile)
    moved = (
        update(files)
        .where(
            files.c.batch_id == bindparam("k_batch"),
            files.c.file_id == bindparam("k_file"),
            files.c.state == FileState.PENDING.value,
            files.c.lines_committed == bindparam("k_from"),
        )
        .values(
            lines_committed=bindparam("k_to"),
            results=files.c.results + bindparam("k_results"),
            malformed=files.c.malformed + bindparam("k_malformed"),
            duplicates=files.c.duplicates + bindparam("k_duplicates"),
        )
    )
    finished = moved.values(
        state=FileState.DONE.value,
        bytes=bindparam("k_bytes"),
        lines=bindparam("k_lines"),
        sha256=bindparam("k_sha256"),
        end_checked=bindparam("k_end_checked"),
        done_at=bindparam("k_done_at"),
        last_error=None,
    )
    return moved, finished
