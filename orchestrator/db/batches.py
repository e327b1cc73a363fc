"""Batches: start tracking them, and apply what the server says, atomically."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator.core.apply import Applied, StoredBatch, apply_observation
from orchestrator.core.observation import BatchObservation
from orchestrator.core.status import TIMESTAMP_FIELDS, BatchStatus, parse_status
from orchestrator.db.database import Database, chunks
from orchestrator.db.models import Batch, BatchEvent, CancelRequest, outside_text, table_of

# Extra column updates a caller wants in the same transaction, decided once the
# outcome of the observation is known (e.g. the reconciler's next poll time).
FollowUp = Callable[[Applied, Batch], Mapping[str, Any]]


@dataclass(frozen=True)
class Recorded:
    applied: Applied
    cancel_closed: str | None  # the outcome, when this observation closed a cancel request


def stored_view(row: Any) -> StoredBatch:
    """The rules' view of a stored batch: an ORM `Batch` or a Row of STATE_COLUMNS."""
    counts = None
    if row.request_counts_total is not None:
        counts = (
            row.request_counts_total,
            row.request_counts_completed or 0,
            row.request_counts_failed or 0,
        )
    return StoredBatch(
        status=parse_status(row.status) if row.status else None,
        timestamps={name: getattr(row, name) for name in TIMESTAMP_FIELDS},
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        request_counts=counts,
    )


def new_batch_row(batch_id: str, now: datetime, source: str) -> dict[str, Any]:
    return {
        "id": batch_id,
        "tracked_at": now,
        "tracked_by": source,
        "next_poll_at": now,
        "updated_at": now,
        "polls": 0,
        "poll_failures": 0,
        "terminal_polls": 0,
        "harvest_state": "waiting",
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
            known: set[str] = set()
            for chunk in chunks(ids):
                known.update(session.scalars(select(Batch.id).where(Batch.id.in_(chunk))))
                session.execute(
                    update(Batch)
                    .where(
                        Batch.id.in_(chunk), Batch.status.is_(None), Batch.next_poll_at.is_(None)
                    )
                    .values(next_poll_at=now, poll_failures=0, updated_at=now)
                )
            new = [i for i in ids if i not in known]
            self.ensure_rows(session, new, now=now, source=source)
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

    def ensure_rows(self, session: Session, ids: list[str], *, now: datetime, source: str) -> None:
        if ids:
            statement = self.db.insert_ignoring_conflicts(table_of(Batch))
            session.execute(statement, [new_batch_row(i, now, source) for i in ids])

    def get(self, batch_id: str) -> Batch | None:
        with self.db.transaction() as session:
            return session.get(Batch, batch_id)

    def record_observation(
        self,
        observed: BatchObservation,
        *,
        now: datetime,
        source: str,
        follow_up: FollowUp | None = None,
    ) -> Recorded:
        """Apply one observation in one transaction, holding the row's lock."""
        with self.db.transaction() as session:
            self.ensure_rows(session, [observed.id], now=now, source=source)
            row = session.scalars(
                select(Batch).where(Batch.id == observed.id).with_for_update()
            ).one()
            return self.apply_locked(
                session, row, observed, now=now, source=source, follow_up=follow_up
            )

    def apply_locked(
        self,
        session: Session,
        row: Batch,
        observed: BatchObservation,
        *,
        now: datetime,
        source: str,
        follow_up: FollowUp | None = None,
    ) -> Recorded:
        """Apply one observation to a row this transaction has locked (ORM objects)."""
        write = plan_batch_write(row, observed, now=now, source=source)
        for name, value in write.changes.items():
            setattr(row, name, value)
        if write.events:
            self.db.insert_rows(session, table_of(BatchEvent), unrepeated(session, write.events))
        closed = self.close_cancel_if_terminal(session, row, now, source)
        if follow_up is not None:
            for name, value in follow_up(write.applied, row).items():
                setattr(row, name, value)
        return Recorded(write.applied, closed)

    def close_cancel_if_terminal(
        self, session: Session, row: Batch, now: datetime, source: str
    ) -> str | None:
        status = parse_status(row.status) if row.status else None
        if status is None or not status.is_terminal:
            return None
        request = session.get(CancelRequest, row.id, with_for_update=True)
        if request is None:
            return None
        close = plan_cancel_close(row, request.state, request.requested_at, now=now, source=source)
        if close is None:
            return None
        for name, value in close.changes.items():
            setattr(request, name, value)
        self.db.insert_rows(session, table_of(BatchEvent), [close.event])
        return close.outcome


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
class BatchWrite:
    applied: Applied
    changes: dict[str, Any]  # mapped attribute name -> new value; only what differs
    events: list[dict[str, Any]]


@dataclass(frozen=True)
class CancelClose:
    outcome: str
    changes: dict[str, Any]
    event: dict[str, Any]


def plan_batch_write(
    row: Any, observed: BatchObservation, *, now: datetime, source: str
) -> BatchWrite:
    """The column changes and events that apply `observed` to `row` (ORM object or Row)."""
    applied = apply_observation(stored_view(row), observed)
    wanted = dict(applied.changes)
    if "metadata" in wanted:
        wanted["metadata_"] = wanted.pop("metadata")
    if applied.status_changes:
        wanted["status_changed_at"] = now
    # Unchanged columns stay out of the UPDATE.
    changes = {k: v for k, v in wanted.items() if k == "status_changed_at" or getattr(row, k) != v}
    if row.status is None and "status" in changes:
        # The first sight of this batch: follow it, even if its polls had been
        # stopped after 404s (a key that could not see it, since fixed).
        changes["next_poll_at"] = now
    changes["version"] = row.version + 1
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
            row.status,
            None,
            None,
            f"{anomaly.kind}: {anomaly.detail}",
        )
        for anomaly in applied.anomalies
    ]
    return BatchWrite(applied, changes, events)


def plan_cancel_close(
    row: Any, request_state: str, requested_at: datetime, *, now: datetime, source: str
) -> CancelClose | None:
    """Close an open cancel request once its batch (`row`, as updated) is terminal."""
    status = parse_status(row.status) if row.status else None
    if (
        status is None
        or not status.is_terminal
        or request_state in ("closed", "failed", "withdrawn")
    ):
        return None
    terminal_at = getattr(row, status.timestamp_field) or now
    outcome = "cancelled" if status is BatchStatus.CANCELLED else f"too_late:{status.value}"
    waited = (terminal_at - requested_at).total_seconds()
    changes: dict[str, Any] = {
        "state": "closed",
        "outcome": outcome,
        "closed_at": now,
        "terminal_status": status.value,
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
        # Ended before anyone asked: there is no "time to terminal" to speak of.
        "seconds_to_terminal": waited if waited >= 0 else None,
    }
    event = event_values(row.id, "cancel_closed", now, source, detail=f"outcome {outcome}")
    return CancelClose(outcome, changes, event)


REPEATABLE_ONCE = ("anomaly", "unexpected_error")


def unrepeated(session: Session, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
) -> dict[str, Any]:
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
