"""The console's read queries: pages of batches in any order, the fleet at a glance,
one batch with a preview of its results.

Nothing here writes, and nothing counts result rows: a page view stays cheap at
10 million of them. Fleet totals come from the counters kept on ``batches`` and
``result_files`` (``results_stored``, ``results``); lists page by keyset (the sort
key and the id of the last row shown), so the thousandth page costs what the first
does. Filters are the command line's ``BatchFilter``: one meaning for both.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, RowMapping, func, literal, select, tuple_
from sqlalchemy.orm import Session

from orchestrator.db.database import Database
from orchestrator.db.models import (
    Batch,
    BatchEvent,
    BatchResult,
    CancelAttempt,
    CancelRequest,
    ResultFile,
    UtcDateTime,
)
from orchestrator.db.pauses import SendingPause, active_pause_in
from orchestrator.db.queries import (
    _SUMMARY_COLUMNS,
    RESULT_COLUMNS,
    UNOBSERVED,
    BatchFilter,
    BatchSummary,
    ResultRow,
    _with_cancels,
    as_record,
    filter_clause,
)

__all__ = ["SORTS", "BadCursor", "BatchView", "BrowseQueries", "ListPage", "Overview"]

# The sort keys a list can take: (expression, newest-first?). Each is indexed with the
# id in migration 0006_console, and never NULL, so a keyset comparison is exact.
SORTS: dict[str, tuple[ColumnElement[datetime] | ColumnElement[str], bool]] = {
    "newest": (func.coalesce(Batch.created_at, Batch.tracked_at), True),
    "oldest": (func.coalesce(Batch.created_at, Batch.tracked_at), False),
    "changed": (func.coalesce(Batch.status_changed_at, Batch.tracked_at), True),
    "id": (Batch.id.expression, False),
}
# A list counts its matching batches up to here and says "more than 1,000" beyond: counting
# every match on every page view would cost in proportion to the whole table.
COUNT_CAP = 1_000
PREVIEW_ROWS = 20
LATEST_EVENTS = 15


class BadCursor(ValueError):
    """A page cursor that this console did not make (edited, or from another sort)."""


@dataclass(frozen=True)
class ListPage:
    rows: list[BatchSummary]
    next_cursor: str | None  # None: this is the last page
    matching: int  # at most COUNT_CAP
    more_than: bool  # more than `matching` match (then by_status is left empty)
    by_status: dict[str, int]  # of the matching batches; UNOBSERVED for never observed


@dataclass(frozen=True)
class Overview:
    now: datetime  # the database's clock
    by_status: dict[str, int]
    by_cancel_state: dict[str, int]
    by_cancel_outcome: dict[str, int]  # closed requests; "" for none yet
    overdue: int
    results_stored: int
    result_line_errors: int
    pause: SendingPause | None
    latest_events: list[dict[str, object]]


@dataclass(frozen=True)
class BatchView:
    now: datetime  # the database's clock
    batch: dict[str, object]
    cancel_request: dict[str, object] | None
    attempts: list[dict[str, object]]
    events: list[dict[str, object]]
    files: list[dict[str, object]]
    preview: list[ResultRow]


def encode_cursor(value: object, batch_id: str) -> str:
    key = value.isoformat() if isinstance(value, datetime) else str(value)
    return base64.urlsafe_b64encode(f"{key}\n{batch_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[object, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        key, batch_id = text.split("\n")
        value: object = key if sort == "id" else datetime.fromisoformat(key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor(f"the page cursor {cursor[:40]!r} is not one this console made") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        raise BadCursor("the page cursor has a time without a zone")
    return value, batch_id


class BrowseQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def now(self) -> datetime:
        """The database server's clock: what every host's ages are measured against."""
        with self.db.transaction() as session:
            return _database_now(session)

    def list_page(
        self, where: BatchFilter, *, sort: str, after: str | None, limit: int
    ) -> ListPage:
        """One page of matching batches in ``sort`` order, after the cursor ``after``."""
        key, newest_first = SORTS[sort]
        conditions = filter_clause(where, self.db.dialect)
        page_conditions = list(conditions)
        if after is not None:
            value, last_id = decode_cursor(after, sort)
            bound = literal(value, UtcDateTime()) if isinstance(value, datetime) else literal(value)
            row_key, last = tuple_(key, Batch.id), tuple_(bound, literal(last_id))
            page_conditions.append(row_key < last if newest_first else row_key > last)
        order = (key.desc(), Batch.id.desc()) if newest_first else (key.asc(), Batch.id.asc())
        with self.db.transaction() as session:
            rows = session.execute(
                _with_cancels(select(*_SUMMARY_COLUMNS, key.label("sort_key")), page_conditions)
                .order_by(*order)
                .limit(limit + 1)
            ).all()
            capped = _with_cancels(select(Batch.status), conditions).limit(COUNT_CAP + 1).subquery()
            counts = session.execute(
                select(capped.c.status, func.count()).group_by(capped.c.status)
            ).all()
        shown = rows[:limit]
        more = len(rows) > limit
        by_status = {status or UNOBSERVED: int(n) for status, n in counts}
        matching = sum(by_status.values())
        return ListPage(
            rows=[_summary_of(row._mapping) for row in shown],
            next_cursor=encode_cursor(shown[-1].sort_key, shown[-1].id) if more else None,
            matching=min(matching, COUNT_CAP),
            more_than=matching > COUNT_CAP,
            by_status={} if matching > COUNT_CAP else by_status,
        )

    def overview(self) -> Overview:
        with self.db.transaction() as session:
            now = _database_now(session)
            # One pass over the batches for every per-batch figure (counters kept on
            # each row, never a count of result rows).
            by_status: dict[str, int] = {}
            overdue = results = line_errors = 0
            for status, n, late, stored, unreadable in session.execute(
                select(
                    Batch.status,
                    func.count(),
                    func.count(Batch.overdue_since),
                    func.coalesce(func.sum(Batch.results_stored), 0),
                    func.coalesce(func.sum(Batch.result_line_errors), 0),
                ).group_by(Batch.status)
            ):
                by_status[status or UNOBSERVED] = int(n)
                overdue, results = overdue + int(late), results + int(stored)
                line_errors += int(unreadable)
            by_state: dict[str, int] = {}
            by_outcome: dict[str, int] = {}
            for state, outcome, n in session.execute(
                select(CancelRequest.state, CancelRequest.outcome, func.count()).group_by(
                    CancelRequest.state, CancelRequest.outcome
                )
            ):
                by_state[state] = by_state.get(state, 0) + int(n)
                if outcome is not None:
                    by_outcome[outcome] = by_outcome.get(outcome, 0) + int(n)
            pause = active_pause_in(session, now)
            events = [
                as_record(event)
                for event in session.scalars(
                    select(BatchEvent).order_by(BatchEvent.id.desc()).limit(LATEST_EVENTS)
                )
            ]
        return Overview(
            now=now,
            by_status=by_status,
            by_cancel_state=by_state,
            by_cancel_outcome=by_outcome,
            overdue=int(overdue),
            results_stored=int(results),
            result_line_errors=int(line_errors),
            pause=pause,
            latest_events=events,
        )

    def batch_view(self, batch_id: str) -> BatchView | None:
        with self.db.transaction() as session:
            batch = session.get(Batch, batch_id)
            if batch is None:
                return None
            now = _database_now(session)
            request = session.get(CancelRequest, batch_id)
            attempts = session.scalars(
                select(CancelAttempt)
                .where(CancelAttempt.batch_id == batch_id)
                .order_by(CancelAttempt.attempt, CancelAttempt.id)
            )
            events = session.scalars(
                select(BatchEvent).where(BatchEvent.batch_id == batch_id).order_by(BatchEvent.id)
            )
            files = session.scalars(
                select(ResultFile)
                .where(ResultFile.batch_id == batch_id)
                .order_by(ResultFile.kind.desc(), ResultFile.file_id)
            )
            preview = session.execute(
                select(*RESULT_COLUMNS)
                .where(BatchResult.batch_id == batch_id)
                .order_by(BatchResult.custom_id)
                .limit(PREVIEW_ROWS)
            ).all()
            return BatchView(
                now=now,
                batch=as_record(batch),
                cancel_request=as_record(request) if request is not None else None,
                attempts=[as_record(a) for a in attempts],
                events=[as_record(e) for e in events],
                files=[as_record(f) for f in files],
                preview=[ResultRow(**row._mapping) for row in preview],
            )


def _summary_of(record: RowMapping) -> BatchSummary:
    return BatchSummary(**{name: v for name, v in record.items() if name != "sort_key"})


def _database_now(session: Session) -> datetime:
    now: datetime | None = session.scalar(select(func.current_timestamp(type_=UtcDateTime())))
    assert now is not None
    return now
