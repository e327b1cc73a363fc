"""The operators' read queries: status tables, one batch in full, result export, health.

Nothing here writes, and every transaction says so (``Database.read_transaction``): on
SQLite an operator's `show`, `results` export or metrics scrape never takes, nor waits
for, the one write lock the workers and reconcilers need. Ages are measured against a
``now`` the caller passes, so the answers are the same in a test as at 3 a.m. The SQL
views in migration 0002 (``batch_overview``, ``cancel_overview``) give the same picture
to someone with only a SQL prompt; these queries read the tables so they can filter
portably.
A status row's columns, the filter and the status page itself are SQL text in
``db/summaries.py`` and ``db/batch_filter.py`` (`status` runs them without
SQLAlchemy); the selects here are built from that same text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVarTuple

from sqlalchemy import (
    ColumnElement,
    Integer,
    Label,
    Row,
    Select,
    String,
    func,
    inspect,
    literal_column,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from orchestrator.core.harvest import FileState
from orchestrator.core.status import UNOBSERVED
from orchestrator.db import summaries as status_rows
from orchestrator.db.batch_filter import CREATED, NO_CANCEL, BatchFilter
from orchestrator.db.database import Database, bound_text, chunks
from orchestrator.db.models import (
    Base,
    Batch,
    BatchEvent,
    BatchResult,
    CancelAttempt,
    CancelRequest,
    OutsideJson,
    ResultFile,
    ResultLineError,
    UtcDateTime,
)
from orchestrator.db.pauses import SendingPause, active_pause_in
from orchestrator.db.summaries import SUMMARY_COLUMNS, BatchSummary

__all__ = [
    "NO_CANCEL",
    "UNOBSERVED",
    "BatchDetail",
    "BatchFilter",
    "BatchSummary",
    "FleetSnapshot",
    "OperatorQueries",
    "ResultRow",
]

_Ts = TypeVarTuple("_Ts")
RESULT_PAGE_ROWS = 1000


@dataclass(frozen=True)
class BatchDetail:
    """Everything recorded about one batch, each record as {column: value}."""

    batch: dict[str, object]
    cancel_request: dict[str, object] | None
    attempts: list[dict[str, object]]
    events: list[dict[str, object]]
    files: list[dict[str, object]]
    results_by_kind: dict[str, int]
    unreadable_lines: int


@dataclass(frozen=True)
class ResultRow:
    custom_id: str
    file_kind: str
    file_id: str
    line_number: int
    line_id: str | None
    status_code: int | None
    request_id: str | None
    error_code: str | None
    error_message: str | None
    body: dict[str, object] | None


@dataclass(frozen=True)
class FleetSnapshot:
    """Counts across every tracked batch, for metrics and the health check."""

    batches_by_status: dict[str, int] = field(default_factory=dict)
    overdue: int = 0
    cancels_by_state: dict[str, int] = field(default_factory=dict)
    results_stored: int = 0
    result_line_errors: int = 0
    result_bytes: int = 0  # of files downloaded in full
    pause: SendingPause | None = None


def as_record(row: Base) -> dict[str, object]:
    """Every column of an ORM row, by its SQL name (``metadata``, not ``metadata_``)."""
    mapper = inspect(type(row))
    return {attr.columns[0].name: getattr(row, attr.key) for attr in mapper.column_attrs}


# The summary columns (db/summaries.py, their one home) as SQLAlchemy columns, typed
# so that rows read as the ORM reads the columns themselves.
_TYPES: dict[str, TypeEngine[Any]] = {
    "text": String(),
    "int": Integer(),
    "time": UtcDateTime(),
    "json": OutsideJson(),
}
_SUMMARY_COLUMNS: tuple[Label[object], ...] = tuple(
    literal_column(sql, _TYPES[kind]).label(name) for name, sql, kind in SUMMARY_COLUMNS
)


# Whence a batch's age and the status page's order (`db/batch_filter.CREATED`), typed.
CREATED_AT = literal_column(CREATED, UtcDateTime())


def filter_clause(where: BatchFilter, dialect: str) -> list[ColumnElement[bool]]:
    """The filter's conditions (db/batch_filter.py) for a select over `_with_cancels`."""
    found = where.sql(dialect)
    if not found.conditions:
        return []
    clause = bound_text("(" + " AND ".join(found.conditions) + ")", found.params)
    return [clause]  # type: ignore[list-item]  # text is a boolean condition here


def _with_cancels(statement: Select[*_Ts], where: Iterable[ColumnElement[bool]]) -> Select[*_Ts]:
    return statement.select_from(Batch).outerjoin(CancelRequest).where(*where)


def _summary(row: Row[*tuple[object, ...]]) -> BatchSummary:
    return BatchSummary(**row._asdict())


# What a result row shows, in `ResultRow`'s order: the export and the console's preview.
RESULT_COLUMNS = (
    BatchResult.custom_id,
    BatchResult.file_kind,
    BatchResult.file_id,
    BatchResult.line_number,
    BatchResult.line_id,
    BatchResult.status_code,
    BatchResult.request_id,
    BatchResult.error_code,
    BatchResult.error_message,
    BatchResult.body,
)


class OperatorQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the status table ------------------------------------------------------------

    def select_batches(self, where: BatchFilter) -> list[BatchSummary]:
        """Every batch the filter matches, oldest first (a bulk cancel's candidates)."""
        with self.db.read_transaction() as session:
            rows = session.execute(
                _with_cancels(
                    select(*_SUMMARY_COLUMNS), filter_clause(where, self.db.dialect)
                ).order_by(CREATED_AT, Batch.id)
            ).all()
        return [_summary(row) for row in rows]

    def summaries(self, batch_ids: Iterable[str]) -> dict[str, BatchSummary]:
        ids = list(dict.fromkeys(batch_ids))
        found: dict[str, BatchSummary] = {}
        with self.db.read_transaction() as session:
            for chunk in chunks(ids):
                rows = session.execute(
                    _with_cancels(select(*_SUMMARY_COLUMNS), [Batch.id.in_(chunk)])
                ).all()
                found.update({row.id: _summary(row) for row in rows})
        return found

    def batches(self, batch_ids: Iterable[str]) -> dict[str, Batch]:
        """The rows as stored now (detached: read, not to be written through)."""
        ids = list(dict.fromkeys(batch_ids))
        found: dict[str, Batch] = {}
        with self.db.read_transaction() as session:
            for chunk in chunks(ids):
                found.update(
                    {b.id: b for b in session.scalars(select(Batch).where(Batch.id.in_(chunk)))}
                )
        return found

    def known_ids(self, batch_ids: Iterable[str]) -> set[str]:
        """Which of these ids are tracked."""
        ids = list(dict.fromkeys(batch_ids))
        found: set[str] = set()
        with self.db.read_transaction() as session:
            for chunk in chunks(ids):
                found.update(session.scalars(select(Batch.id).where(Batch.id.in_(chunk))))
        return found

    def last_synced(self) -> datetime | None:
        """When `orchestrator sync` last recorded a batch it had not seen (None: never):
        until then the table holds only the batches named to `cancel` or `track`."""
        with self.db.reading() as run:
            return status_rows.last_synced(run)

    def ids_named_by(self, text: str, *, limit: int) -> list[str]:
        """``[text]`` if that id is tracked, else the tracked ids that begin with it
        (case-sensitive, in order, at most ``limit``)."""
        with self.db.read_transaction() as session:
            if session.scalar(select(Batch.id).where(Batch.id == text)) is not None:
                return [text]
            ids = session.scalars(
                select(Batch.id)
                # not LIKE, which ignores case on SQLite only: substr is exact on both
                .where(func.substr(Batch.id, 1, len(text)) == text)
                .order_by(Batch.id)
                .limit(limit)
            ).all()
        return list(ids)

    # --- one batch in full -----------------------------------------------------------

    def detail(self, batch_id: str) -> BatchDetail | None:
        with self.db.read_transaction() as session:
            batch = session.get(Batch, batch_id)
            if batch is None:
                return None
            request = session.get(CancelRequest, batch_id)
            return BatchDetail(
                batch=as_record(batch),
                cancel_request=as_record(request) if request is not None else None,
                attempts=self._records(
                    session,
                    select(CancelAttempt)
                    .where(CancelAttempt.batch_id == batch_id)
                    .order_by(CancelAttempt.attempt, CancelAttempt.id),
                ),
                events=self._records(
                    session,
                    select(BatchEvent)
                    .where(BatchEvent.batch_id == batch_id)
                    .order_by(BatchEvent.id),
                ),
                files=self._records(
                    session,
                    select(ResultFile)
                    .where(ResultFile.batch_id == batch_id)
                    .order_by(ResultFile.kind.desc(), ResultFile.file_id),
                ),
                results_by_kind={
                    kind: int(n)
                    for kind, n in session.execute(
                        select(BatchResult.file_kind, func.count())
                        .where(BatchResult.batch_id == batch_id)
                        .group_by(BatchResult.file_kind)
                    )
                },
                unreadable_lines=int(
                    session.scalar(select(func.count()).where(ResultLineError.batch_id == batch_id))
                    or 0
                ),
            )

    @staticmethod
    def _records(session: Session, statement: Select[Base]) -> list[dict[str, object]]:
        return [as_record(row) for row in session.scalars(statement)]

    # --- results, streamed -----------------------------------------------------------

    def iter_results(
        self, batch_id: str, *, kind: str | None = None, page_rows: int = RESULT_PAGE_ROWS
    ) -> Iterator[ResultRow]:
        """Every stored result of a batch in custom_id order, one page in memory at a time.

        Each page is its own short transaction, found through the unique
        (batch_id, custom_id) index from where the last page ended: a long export
        never holds a PostgreSQL snapshot for minutes. Rows are only ever added, so a
        page boundary can miss nothing that was stored before the export began.
        """
        columns = RESULT_COLUMNS
        after: str | None = None
        while True:
            statement = select(*columns).where(BatchResult.batch_id == batch_id)
            if kind is not None:
                statement = statement.where(BatchResult.file_kind == kind)
            if after is not None:
                statement = statement.where(BatchResult.custom_id > after)
            with self.db.read_transaction() as session:
                page = session.execute(
                    statement.order_by(BatchResult.custom_id).limit(page_rows)
                ).all()
            for row in page:
                yield ResultRow(**row._mapping)
            if len(page) < page_rows:
                return
            after = page[-1].custom_id

    # --- across the fleet ------------------------------------------------------------

    def snapshot(self, now: datetime) -> FleetSnapshot:
        with self.db.read_transaction() as session:
            by_status = {
                status or UNOBSERVED: int(n)
                for status, n in session.execute(
                    select(Batch.status, func.count()).group_by(Batch.status)
                )
            }
            overdue, results, line_errors = session.execute(
                select(
                    func.count(Batch.overdue_since),
                    func.coalesce(func.sum(Batch.results_stored), 0),
                    func.coalesce(func.sum(Batch.result_line_errors), 0),
                )
            ).one()
            cancels = {
                state: int(n)
                for state, n in session.execute(
                    select(CancelRequest.state, func.count()).group_by(CancelRequest.state)
                )
            }
            result_bytes = session.scalar(
                select(func.coalesce(func.sum(ResultFile.bytes), 0)).where(
                    ResultFile.state == FileState.DONE.value
                )
            )
            pause = active_pause_in(session, now)
        return FleetSnapshot(
            batches_by_status=by_status,
            overdue=int(overdue),
            cancels_by_state=cancels,
            results_stored=int(results),
            result_line_errors=int(line_errors),
            result_bytes=int(result_bytes or 0),
            pause=pause,
        )
