"""Result files and their rows, written so that a crash anywhere leaves them exactly right.

Each chunk of lines is one transaction: its rows, its unreadable lines, and the
file's checkpoint (``lines_committed``) move together or not at all. The chunk
states which checkpoint it starts from and commits only if the stored one still
says so, and only while the batch's lease is still ours; the unique
(batch_id, custom_id) constraint is the last line of defence. So a restart (or a
second process) resumes at the checkpoint and nothing is stored twice or skipped.

Rows go in through Core ``executemany`` (no ORM objects), with the response body
serialised once by orjson and cast to JSONB on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Insert, Text, bindparam, cast, select, update
from sqlalchemy.dialects.postgresql import JSONB

from orchestrator.core.harvest import FileState
from orchestrator.core.result_lines import LineError, printable
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchResult, ResultFile, ResultLineError
from orchestrator.errors import DatabaseError

__all__ = ["ChunkCounts", "FileProgress", "FileTotals", "LeaseLost", "ResultStore"]

_ERROR_CHARS = 2000
_RESULT_COLUMNS = (
    "batch_id",
    "custom_id",
    "line_id",
    "file_id",
    "file_kind",
    "line_number",
    "status_code",
    "request_id",
    "error_code",
    "error_message",
)


class LeaseLost(DatabaseError):
    """Another process holds this batch now (our lease expired): stop, it carries on."""


@dataclass(frozen=True)
class FileProgress:
    file_id: str
    state: FileState
    lines_committed: int
    attempts: int


@dataclass(frozen=True)
class FileTotals:
    """Facts about the whole file, known once the stream ended cleanly."""

    bytes: int
    lines: int
    sha256: str


@dataclass(frozen=True)
class ChunkCounts:
    inserted: int
    duplicates: int
    malformed: int


class ResultStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert_results = self._results_statement()
        table = ResultLineError.__table__
        self._insert_errors: Insert = db.insert_ignoring_conflicts(table)  # type: ignore[arg-type]
        # psycopg refuses NUL in text, and the raw text of a line is kept verbatim otherwise
        self._nul_unsafe = db.is_postgres

    @property
    def nul_unsafe(self) -> bool:
        return self._nul_unsafe

    def _results_statement(self) -> Insert:
        table = BatchResult.__table__
        values: dict[str, Any] = {name: bindparam(name) for name in _RESULT_COLUMNS}
        # The body arrives as JSON text: bind it as text so it is not serialised twice.
        body = bindparam("body", type_=Text)
        values["body"] = cast(body, JSONB) if self.db.is_postgres else body
        statement = self.db.insert_ignoring_conflicts(table)  # type: ignore[arg-type]
        return statement.values(values).returning(table.c.id)  # type: ignore[attr-defined]

    # --- files ------------------------------------------------------------------------

    def begin_file(self, *, batch_id: str, file_id: str, kind: str, now: datetime) -> FileProgress:
        """The file's row (created pending on first sight), with one more attempt counted."""
        with self.db.transaction() as session:
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
            row = session.get(ResultFile, file_id, with_for_update=True)
            assert row is not None
            if row.state == FileState.PENDING:
                row.attempts += 1
            return FileProgress(file_id, FileState(row.state), row.lines_committed, row.attempts)

    def _file_insert(self) -> Insert:
        return self.db.insert_ignoring_conflicts(ResultFile.__table__)  # type: ignore[arg-type]

    def note_failure(self, file_id: str, *, error: str) -> None:
        """A download that did not finish; the checkpoint keeps what it stored."""
        with self.db.transaction() as session:
            session.execute(
                update(ResultFile)
                .where(ResultFile.file_id == file_id)
                .values(last_error=error[:_ERROR_CHARS])
                .execution_options(synchronize_session=False)
            )

    def mark_missing(self, file_id: str, *, error: str, now: datetime) -> None:
        """The server says the file does not exist (404): what it held cannot be had."""
        with self.db.transaction() as session:
            session.execute(
                update(ResultFile)
                .where(ResultFile.file_id == file_id, ResultFile.state == FileState.PENDING.value)
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

    def commit_chunk(
        self,
        *,
        batch_id: str,
        file_id: str,
        from_line: int,
        to_line: int,
        rows: list[dict[str, Any]],
        errors: list[LineError],
        owner: str,
        lease_until: datetime,
        totals: FileTotals | None = None,
        now: datetime | None = None,
    ) -> ChunkCounts:
        """Store lines ``from_line + 1 .. to_line`` and move the checkpoint, atomically.

        With ``totals`` this is the last chunk: the file is marked done in the same
        transaction. Raises ``LeaseLost`` (nothing stored) when the checkpoint moved
        or the batch's lease is no longer ``owner``'s.
        """
        dumps = orjson.dumps
        for row in rows:
            body = row["body"]
            row["body"] = None if body is None else dumps(body).decode()
        with self.db.transaction() as session:
            current = session.scalar(
                select(ResultFile.lines_committed)
                .where(ResultFile.file_id == file_id, ResultFile.state == FileState.PENDING.value)
                .with_for_update()
            )
            if current != from_line:
                raise LeaseLost(
                    f"file {file_id}: checkpoint is {current}, not {from_line}: "
                    "another process is storing it"
                )
            inserted = 0
            if rows:
                inserted = len(session.execute(self._insert_results, rows).all())
            if errors:
                session.execute(
                    self._insert_errors,
                    [
                        {
                            "file_id": file_id,
                            "line_number": e.line_number,
                            "batch_id": batch_id,
                            "raw": printable(e.raw),
                            "error": e.error,
                        }
                        for e in errors
                    ],
                )
            values: dict[str, Any] = {
                "lines_committed": to_line,
                "results": ResultFile.results + inserted,
                "malformed": ResultFile.malformed + len(errors),
                "duplicates": ResultFile.duplicates + (len(rows) - inserted),
            }
            if totals is not None:
                values.update(
                    state=FileState.DONE.value,
                    bytes=totals.bytes,
                    lines=totals.lines,
                    sha256=totals.sha256,
                    done_at=now,
                    last_error=None,
                )
            session.execute(
                update(ResultFile)
                .where(ResultFile.file_id == file_id)
                .values(values)
                .execution_options(synchronize_session=False)
            )
            # Last, so the batch row is locked only briefly: the fence and the heartbeat.
            fenced = session.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.lease_owner == owner)
                .values(lease_expires_at=lease_until)
                .execution_options(synchronize_session=False)
            )
            if fenced.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(f"batch {batch_id}: the lease is no longer held by {owner}")
            return ChunkCounts(inserted, len(rows) - inserted, len(errors))
