"""Batches: start tracking them, and apply what the server says, atomically."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.core.apply import Applied, StoredBatch, apply_observation
from orchestrator.core.observation import BatchObservation
from orchestrator.core.status import TIMESTAMP_FIELDS, BatchStatus, parse_status
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent, CancelRequest

# Extra column updates a caller wants in the same transaction, decided once the
# outcome of the observation is known (e.g. the reconciler's next poll time).
FollowUp = Callable[[Applied, Batch], Mapping[str, Any]]


@dataclass(frozen=True)
class Recorded:
    applied: Applied
    cancel_closed: str | None  # the outcome, when this observation closed a cancel request


def stored_view(row: Batch) -> StoredBatch:
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
        """Start following these batches; returns the ids that were new."""
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return []
        with self.db.transaction() as session:
            known = set(session.scalars(select(Batch.id).where(Batch.id.in_(ids))))
            new = [i for i in ids if i not in known]
            self.ensure_rows(session, new, now=now, source=source)
            for batch_id in new:
                session.add(
                    event_row(batch_id, "tracked", now, source, detail=f"tracked by {source}")
                )
        return new

    def ensure_rows(self, session: Session, ids: list[str], *, now: datetime, source: str) -> None:
        if ids:
            statement = self.db.insert_ignoring_conflicts(Batch.__table__)  # type: ignore[arg-type]
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
        applied = apply_observation(stored_view(row), observed)
        changes = dict(applied.changes)
        if "metadata" in changes:
            changes["metadata_"] = changes.pop("metadata")
        if applied.status_changes:
            changes["status_changed_at"] = now
        for name, value in changes.items():
            if getattr(row, name) != value:  # unchanged columns stay out of the UPDATE
                setattr(row, name, value)
        for step in applied.status_changes:
            session.add(
                event_row(
                    row.id, "status", now, source, step.from_status, step.to_status, step.server_at
                )
            )
        for anomaly in applied.anomalies:
            session.add(
                event_row(
                    row.id,
                    "anomaly",
                    now,
                    source,
                    row.status,
                    None,
                    None,
                    f"{anomaly.kind}: {anomaly.detail}",
                )
            )
        closed = self.close_cancel_if_terminal(session, row, now, source)
        if follow_up is not None:
            for name, value in follow_up(applied, row).items():
                setattr(row, name, value)
        row.version += 1
        row.updated_at = now
        return Recorded(applied, closed)

    def close_cancel_if_terminal(
        self, session: Session, row: Batch, now: datetime, source: str
    ) -> str | None:
        status = parse_status(row.status) if row.status else None
        if status is None or not status.is_terminal:
            return None
        request = session.get(CancelRequest, row.id, with_for_update=True)
        if request is None or request.state in ("closed", "failed"):
            return None
        terminal_at = getattr(row, status.timestamp_field) or now
        outcome = "cancelled" if status is BatchStatus.CANCELLED else f"too_late:{status.value}"
        request.state = "closed"
        request.outcome = outcome
        request.closed_at = now
        request.terminal_status = status.value
        request.next_attempt_at = None
        request.lease_owner = None
        request.lease_expires_at = None
        waited = (terminal_at - request.requested_at).total_seconds()
        # Ended before anyone asked: there is no "time to terminal" to speak of.
        request.seconds_to_terminal = waited if waited >= 0 else None
        session.add(event_row(row.id, "cancel_closed", now, source, detail=f"outcome {outcome}"))
        return outcome


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
    return BatchEvent(
        batch_id=batch_id,
        kind=kind,
        from_status=from_status,
        to_status=to_status,
        server_at=server_at,
        recorded_at=now,
        source=source,
        detail=detail,
    )
