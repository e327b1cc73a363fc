"""The schema. It is the operators' interface: column names follow the API's fields.

Every timestamp is a timezone-aware UTC ``DateTime`` so it reads naturally in SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from orchestrator.core.harvest import HarvestState
from orchestrator.db.sql_text import postgres_time, sqlite_time
from orchestrator.secret import scrub

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _json_of(dialect: Dialect) -> TypeEngine[object]:
    """JSONB on PostgreSQL, JSON elsewhere. The PostgreSQL dialect is imported only
    there: a command on SQLite starts ~30 ms sooner without it."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        return dialect.type_descriptor(JSONB())
    return dialect.type_descriptor(JSON())


class Json(TypeDecorator[object]):
    """JSON; JSONB on PostgreSQL."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[object]:
        return _json_of(dialect)


BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], object] | None:
        """Straight to what the driver takes: on SQLite the text SQLAlchemy's DATETIME
        stores (`db/sql_text.sqlite_time`), on PostgreSQL the aware UTC datetime
        (`db/sql_text.postgres_time`). This runs for every timestamp the workers write (17 a
        cancel), and the decorator's layered conversion cost as much as the statements."""
        if dialect.name == "sqlite":

            def as_text(value: datetime | None) -> str | None:
                return None if value is None else sqlite_time(value)

            return as_text

        def as_utc(value: datetime | None) -> datetime | None:
            return None if value is None else postgres_time(value)

        return as_utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Outside(TypeDecorator[str]):
    """Text that may hold what an outsider sent (error messages, status text, request ids).

    The one place every such value passes on its way into the database: secrets
    are scrubbed (`orchestrator.secret.scrub`), NUL (which PostgreSQL cannot store)
    is made visible, and a value longer than a sized column is cut to fit rather
    than failing the whole transaction.
    """

    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return outside_text(value, getattr(self.impl_instance, "length", None))


def outside_text(value: str, length: int | None = None) -> str:
    """`value` as an outside-text column stores it."""
    text = scrub(value).replace("\x00", "\\x00")
    return text[:length] if length else text


class OutsideText(_Outside):
    impl = Text
    cache_ok = True


class OutsideString(_Outside):
    impl = String
    cache_ok = True


class OutsideJson(TypeDecorator[object]):
    """JSON from the server (a batch's `errors`, its `metadata`): secrets scrubbed in
    every string inside, NUL (which JSONB cannot hold) made visible."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[object]:
        return _json_of(dialect)

    def process_bind_param(self, value: object | None, dialect: Dialect) -> object:
        return _scrubbed_json(value)


def _scrubbed_json(value: object) -> object:
    if isinstance(value, str):
        return scrub(value).replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {_scrubbed_json(k): _scrubbed_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed_json(v) for v in value]
    return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, object]: Json(), list[object]: Json()}


def table_of(model: type[Base]) -> Table:
    """A model's Core table, for bulk statements that skip the ORM.

    The ORM's bulk insert leaves out None values and so splits a list of rows
    into one statement per distinct set of non-null columns; Core sends one
    executemany.
    """
    return cast(Table, model.__table__)


class Batch(Base):
    """One row per batch: the server's fields, mirrored, plus our bookkeeping."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # --- the server's fields (names as in the API) ---
    endpoint: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(256))
    input_file_id: Mapped[str | None] = mapped_column(String(128))
    completion_window: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(32))  # NULL: tracked, not yet observed
    output_file_id: Mapped[str | None] = mapped_column(String(128))
    error_file_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime | None]
    in_progress_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    request_counts_total: Mapped[int | None]
    request_counts_completed: Mapped[int | None]
    request_counts_failed: Mapped[int | None]
    usage_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_cached_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    metadata_: Mapped[dict[str, object] | None] = mapped_column("metadata", OutsideJson)
    errors: Mapped[list[object] | None] = mapped_column(OutsideJson)
    # --- our bookkeeping ---
    tracked_at: Mapped[datetime]
    tracked_by: Mapped[str] = mapped_column(String(32))  # cancel | track | sync | demo
    status_changed_at: Mapped[datetime | None]  # our clock, when the current status was recorded
    last_polled_at: Mapped[datetime | None]
    next_poll_at: Mapped[datetime | None]  # NULL: nothing more to do
    polls: Mapped[int] = mapped_column(default=0)
    poll_failures: Mapped[int] = mapped_column(default=0)  # consecutive
    last_error: Mapped[str | None] = mapped_column(OutsideText)
    terminal_polls: Mapped[int] = mapped_column(default=0)  # polls since terminal, files missing
    harvest_state: Mapped[str] = mapped_column(String(16), default=HarvestState.WAITING.value)
    harvested_at: Mapped[datetime | None]
    results_stored: Mapped[int] = mapped_column(default=0)
    result_line_errors: Mapped[int] = mapped_column(default=0)
    overdue_since: Mapped[datetime | None]
    results_pruned_at: Mapped[datetime | None]  # result rows removed by `orchestrator prune`
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index(None, "status"),
        # The claims' order, so that a claim stops at its rows (migration 0012).
        Index(None, "next_poll_at", "id"),
        Index(None, "overdue_since"),
        # The console's list orders (migration 0006_console), paged by keyset.
        Index("ix_batches_newest", text("coalesce(created_at, tracked_at)"), "id"),
        Index("ix_batches_changed", text("coalesce(status_changed_at, tracked_at)"), "id"),
    )


class BatchEvent(Base):
    """Append-only history: one row per status change or notable event."""

    __tablename__ = "batch_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(128), ForeignKey("batches.id"))
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    server_at: Mapped[datetime | None]
    recorded_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(32))  # worker | reconciler | operator | sync
    detail: Mapped[str | None] = mapped_column(OutsideText)

    __table_args__ = (Index(None, "batch_id", "id"), Index(None, "kind"))


class CancelRequest(Base):
    """A durable intent to cancel one batch, and how it went."""

    __tablename__ = "cancel_requests"

    batch_id: Mapped[str] = mapped_column(String(128), ForeignKey("batches.id"), primary_key=True)
    requested_at: Mapped[datetime]
    requested_by: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(OutsideText)
    state: Mapped[str] = mapped_column(String(16))  # a CancelState (core/cancel_request.py)
    outcome: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_http_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(OutsideText)
    last_request_id: Mapped[str | None] = mapped_column(OutsideString(128))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    terminal_status: Mapped[str | None] = mapped_column(String(32))
    seconds_to_terminal: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index(None, "state", "next_attempt_at"),)


class CancelAttempt(Base):
    """Every cancel attempt sent, with what came back."""

    __tablename__ = "cancel_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(128), ForeignKey("cancel_requests.batch_id"))
    attempt: Mapped[int]
    worker: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    http_status: Mapped[int | None]
    request_id: Mapped[str | None] = mapped_column(OutsideString(128))
    outcome: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(OutsideText)

    __table_args__ = (Index(None, "batch_id", "attempt"),)


class ResultFile(Base):
    """One downloaded (or to-be-downloaded) output or error file, with its checkpoint."""

    __tablename__ = "result_files"

    # Keyed by batch and file: two batches naming one file each keep their own record.
    batch_id: Mapped[str] = mapped_column(String(128), ForeignKey("batches.id"), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # output | error
    state: Mapped[str] = mapped_column(String(16))  # pending | done | missing
    lines_committed: Mapped[int] = mapped_column(default=0)  # checkpoint: lines fully recorded
    results: Mapped[int] = mapped_column(default=0)
    malformed: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    lines: Mapped[int | None]
    sha256: Mapped[str | None] = mapped_column(String(64))
    # Set with the totals: did the download vouch for its end (a Content-Length or chunked
    # framing)? False keeps the file on the server
    # (core/cleanup.py); NULL: stored before this was recorded.
    end_checked: Mapped[bool | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(OutsideText)
    started_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]


class BatchResult(Base):
    """One request's result: one row per line of an output or error file."""

    __tablename__ = "batch_results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(128))
    custom_id: Mapped[str] = mapped_column(String(512))
    line_id: Mapped[str | None] = mapped_column(String(128))  # the line's own "id"
    file_id: Mapped[str] = mapped_column(String(128))
    file_kind: Mapped[str] = mapped_column(String(8))
    line_number: Mapped[int]
    status_code: Mapped[int | None]
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Plain JSON, not JSONB: stored as sent, no binary conversion on the hot ingest path;
    # operators can still query it with ->, ->> and json_extract.
    body: Mapped[dict[str, object] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("batch_id", "custom_id"),)


class ResultLineError(Base):
    """A line of a result file that could not be parsed, kept verbatim."""

    __tablename__ = "result_line_errors"

    batch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    line_number: Mapped[int] = mapped_column(primary_key=True)
    raw: Mapped[str] = mapped_column(OutsideText)
    error: Mapped[str] = mapped_column(OutsideText)


class FileDeletion(Base):
    """A result or input file we delete from the API once its harvest is complete."""

    __tablename__ = "file_deletions"

    file_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(128), ForeignKey("batches.id"))
    kind: Mapped[str] = mapped_column(String(8))  # output | error | input
    state: Mapped[str] = mapped_column(String(16))  # pending | done | failed
    outcome: Mapped[str | None] = mapped_column(String(32))  # deleted | already_gone | refused
    attempts: Mapped[int] = mapped_column(default=0)
    requested_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime | None]  # the database's time; also the claim's lease
    last_attempt_at: Mapped[datetime | None]
    last_http_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(OutsideText)
    last_request_id: Mapped[str | None] = mapped_column(OutsideString(128))
    done_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "state", "next_attempt_at"), Index(None, "batch_id"))


class Pause(Base):
    """A stop on all sending, shared by every worker (set on 401/403)."""

    __tablename__ = "pauses"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(OutsideText)
    paused_at: Mapped[datetime]
    until: Mapped[datetime]


class RequestBudgetRow(Base):
    """The token bucket every worker and reconciler shares (api_max_requests_per_second;
    see orchestrator/core/request_budget.py). Times are the database server's."""

    __tablename__ = "request_budget"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    counted_at: Mapped[datetime]
    held_until: Mapped[datetime | None]  # a 429's Retry-After: nobody sends until then


class ListWalk(Base):
    """The reconcilers' one shared walk of ``GET /v1/batches`` (processes/list_observation.py),
    and its segments: where each has got to, and whose turn it is to fetch its next
    page. The row named ``batches`` is the walk and its first segment (from the top);
    ``batches/N`` rows are the others of the walk begun at ``started_at``. Times are
    the database server's; a turn is a lease (db/leases.py's rule)."""

    __tablename__ = "list_walks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128))  # fetching the next page
    lease_expires_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]  # the walk in progress began; None: none is
    after_id: Mapped[str | None] = mapped_column(String(128))  # the next page's cursor
    pages: Mapped[int] = mapped_column(Integer, default=0)  # fetched in this walk
    lean: Mapped[int] = mapped_column(Integer, default=0)  # lean pages in a row
    reached_at: Mapped[datetime | None]  # created_at of the last batch listed so far
    last_started_at: Mapped[datetime | None]  # the latest walk began (kept once it ends)
    ended: Mapped[str | None] = mapped_column(String(200))  # why the latest walk ended
    # A segment's row (not the walk's own): the cursor it began at; the segment ends
    # where another begins (processes/list_observation.py)
    start_id: Mapped[str | None] = mapped_column(String(128))


class Process(Base):
    """A running (or last seen) worker or reconciler, for operators and lease recovery."""

    __tablename__ = "processes"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int]
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]


class WebhookEvent(Base):
    """One verified webhook delivery, by ``webhook-id`` (a redelivery finds its row).

    ``received_at`` is the database server's time, so every host judges "webhooks
    have gone quiet" by one clock. ``outcome`` says what the event led to: ``due``
    (the batch was made due for a poll), ``adopted`` (an unknown batch, now
    tracked), ``ignored`` (unknown, not adopted), ``settled`` (nothing left to do
    for the batch) or ``recorded`` (not a batch event).
    """

    __tablename__ = "webhook_events"

    webhook_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))

    __table_args__ = (Index(None, "received_at"), Index(None, "batch_id"))


class ForgottenBatch(Base):
    """A batch `orchestrator forget` dropped, kept as it was: who, when, why, and its row.

    Its history and cancel rows go with it (they reference the batch), so this row is
    the record that it was ever tracked.
    """

    __tablename__ = "forgotten_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(128))
    forgotten_at: Mapped[datetime]
    forgotten_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(OutsideText)
    batch: Mapped[dict[str, object]]  # the batches row, every column, as it was
    cancel_request: Mapped[dict[str, object] | None]  # its cancel_requests row, if any
    results_dropped: Mapped[int] = mapped_column(default=0)

    __table_args__ = (Index(None, "batch_id"),)
