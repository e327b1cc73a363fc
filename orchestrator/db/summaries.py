"""The status table's rows: one batch a line, its columns written once as SQL text.

`orchestrator status` runs these statements through `sqlite3` directly on SQLite (no
SQLAlchemy to import: `db/sqlite_reader.py`) and through a session elsewhere
(`Database.reading`); `db/queries.py` and `db/browse.py` build their selects of the
same rows from `SUMMARY_COLUMNS`. So a column, the filter and the page's order each
have one home.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol

from orchestrator.core.cancel_state import CancelState
from orchestrator.core.status import UNOBSERVED, BatchStatus, parse_status
from orchestrator.db.batch_filter import CREATED, BatchFilter
from orchestrator.db.pause_state import SendingPause, read_pause
from orchestrator.db.sql_text import Run, read_json, read_time

__all__ = [
    "FROM_BATCHES",
    "SUMMARY_COLUMNS",
    "BatchPage",
    "BatchSummary",
    "Reading",
    "StatusRead",
    "last_synced",
    "list_batches",
    "read_status",
    "status_reading",
    "summary_of",
]


@dataclass(frozen=True)
class BatchSummary:
    """One line of the status table."""

    id: str
    status: str | None
    endpoint: str | None
    model: str | None
    created_at: datetime | None
    tracked_at: datetime
    status_changed_at: datetime | None
    overdue_since: datetime | None
    request_counts_total: int | None
    request_counts_completed: int | None
    request_counts_failed: int | None
    results_stored: int
    result_line_errors: int
    harvest_state: str
    last_error: str | None
    cancel_state: str | None
    cancel_outcome: str | None
    metadata: dict[str, object] | None
    # When the current status began: the server's timestamp for it (in_progress_at, ...),
    # else when we recorded it, else when we began tracking.
    status_since: datetime
    answers: int  # results recorded from the output file: the paid-for answers
    errors: int  # results recorded from the error file

    @property
    def overdue(self) -> bool:
        return self.overdue_since is not None

    @property
    def is_terminal(self) -> bool:
        status = parse_status(self.status) if self.status else None
        return status is not None and status.is_terminal

    def seconds_in_status(self, now: datetime) -> float:
        """Since the current status began, by the server's timestamp when it sent one."""
        return max(0.0, (now - self.status_since).total_seconds())

    def seconds_since_created(self, now: datetime) -> float:
        """The batch's age: since the server created it (since we began tracking it, if
        never observed)."""
        return max(0.0, (now - (self.created_at or self.tracked_at)).total_seconds())


@dataclass(frozen=True)
class BatchPage:
    # Read from the database as they are iterated, inside the read (`status_reading`);
    # a list once read (`read_status`).
    rows: Iterable[BatchSummary]
    matching: int  # every batch the filter matches, shown or not
    by_status: dict[str, int]  # of those matching; UNOBSERVED for never observed
    shown: int  # how many `rows` holds: the same snapshot counted them


def _literal(value: str) -> str:
    """One of our own enum values, written into the SQL (never anything typed)."""
    if not re.fullmatch(r"[a-z_]+", value):
        raise ValueError(f"not a plain enum value: {value!r}")
    return f"'{value}'"


def _results_of_kind(kind: str) -> str:
    """How many results of a batch were recorded from its output (or error) files."""
    return (
        "(SELECT coalesce(sum(result_files.results), 0) FROM result_files "
        f"WHERE result_files.batch_id = batches.id AND result_files.kind = {_literal(kind)})"
    )


_STATUS_SINCE = (
    "coalesce(CASE "
    + " ".join(
        f"WHEN batches.status = {_literal(s)} THEN batches.{s.timestamp_field}" for s in BatchStatus
    )
    + " END, batches.status_changed_at, batches.tracked_at)"
)
_CANCEL_IN_TROUBLE = ", ".join(_literal(s) for s in (CancelState.PENDING, CancelState.FAILED))

Kind = Literal["text", "int", "time", "json"]
# (name, SQL, kind), in BatchSummary's order.
SUMMARY_COLUMNS: tuple[tuple[str, str, Kind], ...] = (
    ("id", "batches.id", "text"),
    ("status", "batches.status", "text"),
    ("endpoint", "batches.endpoint", "text"),
    ("model", "batches.model", "text"),
    ("created_at", "batches.created_at", "time"),
    ("tracked_at", "batches.tracked_at", "time"),
    ("status_changed_at", "batches.status_changed_at", "time"),
    ("overdue_since", "batches.overdue_since", "time"),
    ("request_counts_total", "batches.request_counts_total", "int"),
    ("request_counts_completed", "batches.request_counts_completed", "int"),
    ("request_counts_failed", "batches.request_counts_failed", "int"),
    ("results_stored", "batches.results_stored", "int"),
    ("result_line_errors", "batches.result_line_errors", "int"),
    ("harvest_state", "batches.harvest_state", "text"),
    # The batch's own trouble first; the cancel's last error only while the cancel is
    # still in trouble (pending or failed). Once accepted or closed, a refusal on the
    # way (a 409, a too-late 400) was answered by the truth and is no error.
    (
        "last_error",
        "coalesce(batches.last_error, CASE WHEN cancel_requests.state IN "
        f"({_CANCEL_IN_TROUBLE}) THEN cancel_requests.last_error END)",
        "text",
    ),
    ("cancel_state", "cancel_requests.state", "text"),
    ("cancel_outcome", "cancel_requests.outcome", "text"),
    ("metadata", "batches.metadata", "json"),
    ("status_since", _STATUS_SINCE, "time"),
    ("answers", _results_of_kind("output"), "int"),
    ("errors", _results_of_kind("error"), "int"),
)
FROM_BATCHES = "batches LEFT OUTER JOIN cancel_requests ON batches.id = cancel_requests.batch_id"
_SELECT_SUMMARIES = "SELECT " + ", ".join(f"{sql} AS {name}" for name, sql, _ in SUMMARY_COLUMNS)
_READERS = {"time": read_time, "json": read_json}


def summary_of(row: Sequence[Any]) -> BatchSummary:
    """A row of the summary columns, as raw driver values, read as SQLAlchemy would."""
    values = {
        name: _READERS[kind](value) if kind in _READERS else value
        for (name, _, kind), value in zip(SUMMARY_COLUMNS, row, strict=True)
    }
    return BatchSummary(**values)


def list_batches(run: Run, dialect: str, where: BatchFilter, *, limit: int | None) -> BatchPage:
    """The newest matching batches first (all of them when `limit` is None), with how
    many match in all, per status; in the caller's transaction, which its rows are read
    in as they are iterated."""
    found = where.sql(dialect)
    matching = f"FROM {FROM_BATCHES}{found.clause()}"
    counts = run(
        f"SELECT batches.status, count(*) {matching} GROUP BY batches.status", found.params
    )
    by_status = {status or UNOBSERVED: int(n) for status, n in counts}
    total = sum(by_status.values())
    rows_sql = f"{_SELECT_SUMMARIES} {matching} ORDER BY {CREATED} DESC, batches.id"
    params = dict(found.params)
    if limit is not None:
        rows_sql += " LIMIT :page_limit"
        params["page_limit"] = limit
    rows = (summary_of(row) for row in run(rows_sql, params))
    return BatchPage(rows, total, by_status, total if limit is None else min(limit, total))


def last_synced(run: Run) -> datetime | None:
    """When `orchestrator sync` last recorded a batch it had not seen (None: never):
    until then the table holds only the batches named to `cancel` or `track`."""
    rows = run("SELECT max(batches.tracked_at) FROM batches WHERE batches.tracked_by = 'sync'", {})
    return next((read_time(value) for (value,) in rows), None)


class Reading(Protocol):
    """Where SQL text runs: `Database` (SQLAlchemy) or `SqliteReader` (sqlite3 alone)."""

    @property
    def dialect(self) -> str: ...

    def reading(self) -> AbstractContextManager[Run]: ...


@dataclass(frozen=True)
class StatusRead:
    page: BatchPage
    pause: SendingPause | None
    synced: datetime | None  # read only when nothing matches (see `last_synced`)


@contextmanager
def status_reading(
    source: Reading, where: BatchFilter, now: datetime, *, limit: int | None
) -> Iterator[StatusRead]:
    """What `orchestrator status` shows, in one read transaction (one snapshot): the
    pause in force at `now`, the page, and when nothing matches, when the table was last
    synced. The page's rows are read as they are iterated, inside the `with`: listing
    100,000 batches holds a few hundred at a time."""
    with source.reading() as run:
        pause = read_pause(run, now)
        page = list_batches(run, source.dialect, where, limit=limit)
        synced = last_synced(run) if not page.matching else None
        yield StatusRead(page, pause, synced)


def read_status(
    source: Reading, where: BatchFilter, now: datetime, *, limit: int | None
) -> StatusRead:
    """The same, its rows read into a list (for a page small enough to hold)."""
    with status_reading(source, where, now, limit=limit) as read:
        return replace(read, page=replace(read.page, rows=list(read.page.rows)))
