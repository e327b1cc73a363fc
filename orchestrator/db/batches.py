"""Batches: start tracking them, and apply what the server says, atomically."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict

from sqlalchemy import Connection, Row, Select, select, update
from sqlalchemy.orm import Session

from orchestrator.core.apply import Applied, StoredBatch, apply_observation
from orchestrator.core.cancel_request import (
    CancelState,
    PlannedEvent,
    RequestSnapshot,
    close,
)
from orchestrator.core.harvest import HarvestState
from orchestrator.core.observation import USAGE_FIELDS, BatchObservation
from orchestrator.core.status import TIMESTAMP_FIELDS, parse_status
from orchestrator.db.database import Database, chunks, in_list
from orchestrator.db.models import Batch, BatchEvent, CancelRequest, outside_text, table_of


@dataclass(frozen=True)
class Recorded:
    applied: Applied
    cancel_closed: str | None  # the outcome, when this observation closed a cancel request
    changed: frozenset[str] = frozenset()  # the batch's columns this observation changed
    polling_stopped: bool = False  # see record_observation's follow_new_if_ended
    inserted: bool = False  # this observation's transaction inserted the batch's row


class EventRow(TypedDict):
    """One ``batch_events`` row as values, for ``Database.insert_rows``."""

    batch_id: str
    kind: str
    from_status: str | None
    to_status: str | None
    server_at: datetime | None
    recorded_at: datetime
    source: str
    detail: str | None


def _stored(
    status: str | None,
    timestamps: Mapping[str, datetime | None],
    output_file_id: str | None,
    error_file_id: str | None,
    counts: tuple[int | None, int | None, int | None],
    values: Mapping[str, object],
) -> StoredBatch:
    total, completed, failed = counts
    return StoredBatch(
        status=parse_status(status) if status else None,
        timestamps=timestamps,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        request_counts=None if total is None else (total, completed or 0, failed or 0),
        usage={name: values[name] for name in USAGE_FIELDS},  # type: ignore[misc]
    )


def new_batch_row(batch_id: str, now: datetime, source: str) -> dict[str, object]:
    return {
        "id": batch_id,
        "tracked_at": now,
        "tracked_by": source,
        "next_poll_at": now,
        "updated_at": now,
        "polls": 0,
        "poll_failures": 0,
        "terminal_polls": 0,
        "harvest_state": HarvestState.WAITING.value,
        "results_stored": 0,
        "result_line_errors": 0,
        "version": 0,
    }


class BatchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def track(self, batch_ids: Iterable[str], *, now: datetime, source: str) -> list[str]:
        """Start following these batches; returns the ids that were new. A known batch
        whose polls were stopped (never seen, 404s) is polled again from now."""
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return []
        with self.db.transaction() as session:
            for chunk in chunks(ids):
                session.execute(
                    update(Batch)
                    .where(
                        Batch.id.in_(chunk), Batch.status.is_(None), Batch.next_poll_at.is_(None)
                    )
                    .values(next_poll_at=now, poll_failures=0, updated_at=now)
                )
            new = self.ensure_rows(session, ids, now=now, source=source)
            if new:
                self.db.insert_rows(
                    session,
                    table_of(BatchEvent),
                    [
                        event_values(b, "tracked", now, source, detail=f"tracked by {source}")
                        for b in new
                    ],
                )
        return new

    def ensure_rows(
        self, session: Session, ids: list[str], *, now: datetime, source: str
    ) -> list[str]:
        """Insert the rows of these batches that do not exist; the ids this transaction
        inserted, in the order given. The insert itself decides (ON CONFLICT DO NOTHING
        RETURNING), not an earlier read: a row another host inserted meanwhile (`track`,
        `cancel`, a webhook) is never taken for new, nor tracked twice."""
        if not ids:
            return []
        statement = self.db.insert_ignoring_conflicts(table_of(Batch)).returning(
            table_of(Batch).c.id
        )
        inserted = set(session.scalars(statement, [new_batch_row(i, now, source) for i in ids]))
        return [i for i in ids if i in inserted]

    def insert_if_missing(
        self, session: Session, batch_id: str, *, now: datetime, source: str
    ) -> bool:
        """Insert this batch's row unless it exists; whether this transaction inserted it
        (``ensure_rows``)."""
        return bool(self.ensure_rows(session, [batch_id], now=now, source=source))

    def get(self, batch_id: str) -> Batch | None:
        with self.db.transaction() as session:
            return session.get(Batch, batch_id)

    def record_observation(
        self,
        observed: BatchObservation,
        *,
        now: datetime,
        source: str,
        follow_new_if_ended: bool = True,
    ) -> Recorded:
        """Apply one observation in one transaction, holding the row's lock. With
        ``follow_new_if_ended`` False, a batch this transaction first records, seen ended,
        is not polled (nor harvested) after. Only a row inserted here: an existing row was
        tracked by someone (`track`, `cancel`, an earlier sync) and keeps the polls it has."""
        with self.db.transaction() as session:
            inserted = self.insert_if_missing(session, observed.id, now=now, source=source)
            row = session.scalars(
                select(Batch).where(Batch.id == observed.id).with_for_update()
            ).one()
            recorded = self.apply_locked(session, row, observed, now=now, source=source)
            recorded = dataclasses.replace(recorded, inserted=inserted)
            ended = recorded.applied.status is not None and recorded.applied.status.is_terminal
            if ended and inserted and not follow_new_if_ended:
                row.next_poll_at = None  # nothing for the reconciler to do
                return dataclasses.replace(recorded, polling_stopped=True)
            return recorded

    def apply_locked(
        self,
        session: Session,
        row: Batch,
        observed: BatchObservation,
        *,
        now: datetime,
        source: str,
    ) -> Recorded:
        """Apply one observation to a row this transaction has locked (ORM objects)."""
        write = plan_batch_write(snapshot_of(row), observed, now=now, source=source)
        changed = frozenset(n for n, v in write.changes.items() if getattr(row, n) != v)
        for name, value in write.changes.items():
            setattr(row, name, value)
        if write.events:
            self.db.insert_rows(session, table_of(BatchEvent), unrepeated(session, write.events))
        closed = self.close_cancel_if_terminal(session, row, now, source)
        return Recorded(write.applied, closed, changed)

    def close_cancel_if_terminal(
        self, session: Session, row: Batch, now: datetime, source: str
    ) -> str | None:
        batch = snapshot_of(row).stored
        if batch.status is None or not batch.status.is_terminal:
            return None
        request = session.get(CancelRequest, row.id, with_for_update=True)
        if request is None:
            return None
        plan = close(request_snapshot(request), batch, now)
        if not plan.moves:
            return None
        for name, value in plan_values(plan.changes).items():
            setattr(request, name, value)
        self.db.insert_rows(
            session, table_of(BatchEvent), planned_events(row.id, plan.events, now, source)
        )
        return plan.outcome


# --- what to write, decided without touching the database --------------------------------
#
# Both the ORM path above (one row) and the worker's bulk path (many rows, plain
# UPDATEs) write exactly what these decide, so the rules live in one place.

# The columns the rules read: enough to build a StoredBatch and to leave unchanged
# columns out of the UPDATE.
STATE_COLUMNS = (
    Batch.id,
    Batch.status,
    *(getattr(Batch, name) for name in TIMESTAMP_FIELDS),
    Batch.output_file_id,
    Batch.error_file_id,
    Batch.request_counts_total,
    Batch.request_counts_completed,
    Batch.request_counts_failed,
    Batch.endpoint,
    Batch.model,
    Batch.input_file_id,
    Batch.completion_window,
    Batch.usage_input_tokens,
    Batch.usage_cached_tokens,
    Batch.usage_output_tokens,
    Batch.usage_reasoning_tokens,
    Batch.usage_total_tokens,
    Batch.metadata_,
    Batch.errors,
    Batch.version,
)


@dataclass(frozen=True)
class BatchSnapshot:
    """A locked batch as the rules read it (from an ORM ``Batch`` or a Row of STATE_COLUMNS)."""

    id: str
    status_text: str | None  # as stored, even a status we do not know
    version: int
    stored: StoredBatch
    values: Mapping[str, object]  # every STATE_COLUMNS attribute, to leave unchanged ones out

    def after(self, write: BatchWrite) -> BatchSnapshot:
        """This batch as it will be once ``write`` is written."""
        status = write.applied.status
        return BatchSnapshot(  # not dataclasses.replace: this runs for every answer
            self.id,
            status.value if status is not None else self.status_text,
            write.version,
            write.after,
            {**self.values, **write.changes},
        )


STATE_NAMES = tuple(column.key for column in STATE_COLUMNS)


def snapshot_of(row: Batch) -> BatchSnapshot:
    timestamps = {name: getattr(row, name) for name in TIMESTAMP_FIELDS}
    counts = (row.request_counts_total, row.request_counts_completed, row.request_counts_failed)
    values = {name: getattr(row, name) for name in STATE_NAMES}
    return BatchSnapshot(
        row.id,
        row.status,
        row.version,
        _stored(row.status, timestamps, row.output_file_id, row.error_file_id, counts, values),
        values,
    )


def snapshot_of_row(row: Row[*tuple[object, ...]]) -> BatchSnapshot:
    """The snapshot of a Row of STATE_COLUMNS (a plain SELECT: no ORM objects to build)."""
    return snapshot_of_values(row._asdict())


def snapshot_of_values(values: Mapping[str, object]) -> BatchSnapshot:
    """The snapshot of STATE_COLUMNS' values by name (STATE_NAMES)."""
    timestamps = {name: values[name] for name in TIMESTAMP_FIELDS}
    status, version = values["status"], values["version"]
    counts = (
        values["request_counts_total"],
        values["request_counts_completed"],
        values["request_counts_failed"],
    )
    return BatchSnapshot(
        str(values["id"]),
        None if status is None else str(status),
        int(version),  # type: ignore[call-overload]
        _stored(
            None if status is None else str(status),
            timestamps,  # type: ignore[arg-type]
            values["output_file_id"],  # type: ignore[arg-type]
            values["error_file_id"],  # type: ignore[arg-type]
            counts,  # type: ignore[arg-type]
            values,
        ),
        values,
    )


@dataclass(frozen=True)
class BatchWrite:
    applied: Applied
    changes: dict[str, object]  # mapped attribute name -> new value; only what differs
    events: list[EventRow]
    version: int
    after: StoredBatch  # the batch as the rules will see it once written


def plan_batch_write(
    row: BatchSnapshot, observed: BatchObservation, *, now: datetime, source: str
) -> BatchWrite:
    """The column changes and events that apply `observed` to the batch `row`."""
    applied = apply_observation(row.stored, observed)
    wanted = dict(applied.changes)
    if "metadata" in wanted:
        wanted["metadata_"] = wanted.pop("metadata")
    if applied.status_changes:
        wanted["status_changed_at"] = now
    # Unchanged columns stay out of the UPDATE.
    changes: dict[str, object] = {
        k: v for k, v in wanted.items() if k == "status_changed_at" or row.values.get(k) != v
    }
    if row.status_text is None and "status" in changes:
        # The first sight of this batch: follow it, even if its polls had been
        # stopped after 404s (a key that could not see it, since fixed).
        changes["next_poll_at"] = now
    version = row.version + 1
    changes["version"] = version
    changes["updated_at"] = now
    events = [
        event_values(
            row.id, "status", now, source, step.from_status, step.to_status, step.server_at
        )
        for step in applied.status_changes
    ]
    events += [
        event_values(
            row.id,
            "anomaly",
            now,
            source,
            row.status_text,
            None,
            None,
            f"{anomaly.kind}: {anomaly.detail}",
        )
        for anomaly in applied.anomalies
    ]
    return BatchWrite(applied, changes, events, version, _after(row.stored, applied))


def _after(stored: StoredBatch, applied: Applied) -> StoredBatch:
    """What the rules see of the batch once `applied` is written."""
    counts = stored.request_counts
    if "request_counts_total" in applied.changes:
        counts = (
            applied.changes["request_counts_total"],
            applied.changes["request_counts_completed"],
            applied.changes["request_counts_failed"],
        )
    return StoredBatch(
        status=applied.status,
        timestamps={
            name: applied.changes.get(name, stored.timestamps.get(name))
            for name in TIMESTAMP_FIELDS
        },
        output_file_id=applied.changes.get("output_file_id", stored.output_file_id),
        error_file_id=applied.changes.get("error_file_id", stored.error_file_id),
        request_counts=counts,
        usage={name: applied.changes.get(name, stored.usage.get(name)) for name in USAGE_FIELDS},
    )


# --- cancel requests: the rows the rules of core/cancel_request.py read and write ---------


def request_snapshot(row: CancelRequest) -> RequestSnapshot:
    return RequestSnapshot(
        row.batch_id, CancelState(row.state), row.requested_at, row.attempts, row.lease_owner
    )


def _lock_requests_of(size: int) -> Select[*tuple[Any, ...]]:
    """The locking read of ``lock_requests`` for an IN list of ``size`` (``rows_for_ids``)."""
    return (
        select(
            CancelRequest.batch_id,
            CancelRequest.state,
            CancelRequest.requested_at,
            CancelRequest.attempts,
            CancelRequest.lease_owner,
        )
        .where(CancelRequest.batch_id.in_(in_list(size)))
        .order_by(CancelRequest.batch_id)
        .with_for_update()
    )


def lock_requests(
    db: Database, on: Session | Connection, ids: Sequence[str]
) -> dict[str, RequestSnapshot]:
    """The cancel requests of these batches, locked in id order after their batches (the
    order every writer locks in): what the rules read of each. Compiled once per IN
    list size and run on the driver: this runs in every recording transaction."""
    return {
        batch_id: RequestSnapshot(batch_id, CancelState(state), requested_at, attempts, owner)
        for batch_id, state, requested_at, attempts, owner in db.rows_for_ids(
            on, "lock-requests", _lock_requests_of, list(ids)
        )
    }


def column_values(changes: Mapping[str, object]) -> dict[str, object]:
    """Attribute names as column names (``metadata_`` is the ``metadata`` column)."""
    return {("metadata" if k == "metadata_" else k): v for k, v in changes.items()}


def plan_values(columns: Mapping[str, object]) -> dict[str, object]:
    """A plan's columns as values to write (a state, an enum, as its plain text)."""
    return {k: v.value if isinstance(v, StrEnum) else v for k, v in columns.items()}


def planned_events(
    batch_id: str, events: Sequence[PlannedEvent], now: datetime, source: str
) -> list[EventRow]:
    return [event_values(batch_id, e.kind, now, source, detail=e.detail) for e in events]


REPEATABLE_ONCE = ("anomaly", "unexpected_error")


def unrepeated(session: Session | Connection, events: list[EventRow]) -> list[EventRow]:
    """`events` less the anomalies and unexpected errors their batch already has, word
    for word: a server that sends the same wrong answer at every poll would otherwise
    fill the history with it (the batch's `last_error` and counts show it persisting)."""
    once = [e for e in events if e["kind"] in REPEATABLE_ONCE]
    if not once:
        return events
    ids = sorted({e["batch_id"] for e in once})
    seen = {
        (batch_id, kind, detail)
        for batch_id, kind, detail in session.execute(
            select(BatchEvent.batch_id, BatchEvent.kind, BatchEvent.detail).where(
                BatchEvent.batch_id.in_(ids), BatchEvent.kind.in_(REPEATABLE_ONCE)
            )
        )
    }
    kept = []
    for event in events:
        if event["kind"] in REPEATABLE_ONCE:
            key = (event["batch_id"], event["kind"], outside_text(event["detail"] or ""))
            if key in seen:
                continue
            seen.add(key)
        kept.append(event)
    return kept


def event_values(
    batch_id: str,
    kind: str,
    now: datetime,
    source: str,
    from_status: str | None = None,
    to_status: str | None = None,
    server_at: datetime | None = None,
    detail: str | None = None,
) -> EventRow:
    """One `batch_events` row as values, for `Database.insert_rows`."""
    return {
        "batch_id": batch_id,
        "kind": kind,
        "from_status": from_status,
        "to_status": to_status,
        "server_at": server_at,
        "recorded_at": now,
        "source": source,
        "detail": detail,
    }


def event_row(
    batch_id: str,
    kind: str,
    now: datetime,
    source: str,
    from_status: str | None = None,
    to_status: str | None = None,
    server_at: datetime | None = None,
    detail: str | None = None,
) -> BatchEvent:
    """One `batch_events` row as an object, for `session.add`."""
    return BatchEvent(
        **event_values(batch_id, kind, now, source, from_status, to_status, server_at, detail)
    )
