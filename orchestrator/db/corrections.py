"""Correcting an operator's mistakes: forget a batch tracked by mistake; harvest a batch
that ended before anyone followed it.

Forgetting deletes the batch and every row that hangs off it (history, cancel request
and attempts, result files and rows, unreadable lines, file deletions), in one
transaction, and keeps one `forgotten_batches` row with the batch and its cancel
request as they were: who forgot it, when, and why. A batch a worker or reconciler
holds a lease on is left alone (it is being worked on; try again once it is not).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from orchestrator.core.harvest import HarvestState
from orchestrator.core.status import TERMINAL
from orchestrator.db.batches import event_values
from orchestrator.db.database import Database, chunks
from orchestrator.db.models import (
    Batch,
    BatchEvent,
    BatchResult,
    CancelAttempt,
    CancelRequest,
    FileDeletion,
    ForgottenBatch,
    ResultFile,
    ResultLineError,
    table_of,
)
from orchestrator.db.queries import as_record

# Tables whose rows name a batch, children before the rows they reference.
DEPENDENTS = (CancelAttempt, CancelRequest, BatchEvent, ResultLineError, BatchResult)
DEPENDENTS_TOO = (ResultFile, FileDeletion)
NOT_HARVESTED = (HarvestState.WAITING.value, HarvestState.PENDING.value)


@dataclass
class ForgetSummary:
    forgotten: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)  # leased by a running process
    unknown: list[str] = field(default_factory=list)


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON: times as ISO text; plain str keys (column names are str subclasses,
    which orjson refuses as keys)."""
    return {str(k): v.isoformat() if isinstance(v, datetime) else v for k, v in record.items()}


def _locked_requests(session: Session, ids: Sequence[str]) -> dict[str, CancelRequest]:
    """These batches' cancel requests, locked in id order (the order every writer uses)."""
    return {
        r.batch_id: r
        for r in session.scalars(
            select(CancelRequest)
            .where(CancelRequest.batch_id.in_(ids))
            .order_by(CancelRequest.batch_id)
            .with_for_update()
        )
    }


class CorrectionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def forget(
        self, batch_ids: Iterable[str], *, now: datetime, by: str, reason: str | None
    ) -> ForgetSummary:
        summary = ForgetSummary()
        ids = sorted(set(batch_ids))
        with self.db.transaction() as session:
            for chunk in chunks(ids):
                self._forget_chunk(session, chunk, now, by, reason, summary)
        return summary

    def _forget_chunk(
        self,
        session: Session,
        ids: Sequence[str],
        now: datetime,
        by: str,
        reason: str | None,
        summary: ForgetSummary,
    ) -> None:
        # Batches first, then requests, in id order: every writer locks in this order.
        batches = {
            b.id: b
            for b in session.scalars(
                select(Batch).where(Batch.id.in_(ids)).order_by(Batch.id).with_for_update()
            )
        }
        requests = _locked_requests(session, ids)
        gone: list[str] = []
        records: list[dict[str, Any]] = []
        for batch_id in ids:
            batch = batches.get(batch_id)
            if batch is None:
                summary.unknown.append(batch_id)
                continue
            request = requests.get(batch_id)
            leases = [batch.lease_expires_at, request.lease_expires_at if request else None]
            if any(lease is not None and lease > now for lease in leases):
                summary.in_use.append(batch_id)
                continue
            gone.append(batch_id)
            records.append(
                {
                    "batch_id": batch_id,
                    "forgotten_at": now,
                    "forgotten_by": by,
                    "reason": reason,
                    "batch": _jsonable(as_record(batch)),
                    "cancel_request": _jsonable(as_record(request)) if request else None,
                    "results_dropped": 0,
                }
            )
        if not gone:
            return
        counts = dict(
            session.execute(
                select(BatchResult.batch_id, func.count())
                .where(BatchResult.batch_id.in_(gone))
                .group_by(BatchResult.batch_id)
            ).all()
        )
        for record in records:
            record["results_dropped"] = int(counts.get(record["batch_id"], 0))
        session.expunge_all()
        for model in (*DEPENDENTS, *DEPENDENTS_TOO):
            session.execute(
                delete(model)
                .where(model.batch_id.in_(gone))
                .execution_options(synchronize_session=False)
            )
        session.execute(
            delete(Batch).where(Batch.id.in_(gone)).execution_options(synchronize_session=False)
        )
        self.db.insert_rows(session, table_of(ForgottenBatch), records)
        summary.forgotten.extend(gone)

    def harvest_unharvested(
        self, batch_ids: Iterable[str], *, now: datetime, source: str
    ) -> list[str]:
        """Of these batches, those that ended and were never followed (sync records a
        finished batch without harvesting it): made due, so the reconciler harvests them."""
        ids = sorted(set(batch_ids))
        due: list[str] = []
        with self.db.transaction() as session:
            for chunk in chunks(ids):
                due += session.scalars(
                    update(Batch)
                    .where(
                        Batch.id.in_(chunk),
                        Batch.status.in_([s.value for s in TERMINAL]),
                        Batch.harvest_state.in_(NOT_HARVESTED),
                        Batch.next_poll_at.is_(None),
                    )
                    .values(next_poll_at=now, terminal_polls=0, updated_at=now)
                    .returning(Batch.id)
                    .execution_options(synchronize_session=False)
                ).all()
            if due:
                detail = f"harvest asked for by {source}"
                self.db.insert_rows(
                    session,
                    table_of(BatchEvent),
                    [event_values(b, "harvest_requested", now, source, detail=detail) for b in due],
                )
        return sorted(due)
