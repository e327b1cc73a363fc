"""Durable cancel requests: record the intent, lease due ones, record every attempt.

What each of these does to a request is decided by the rules of
``core/cancel_request.py``; here rows are locked, snapshots built, plans written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Select, and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from orchestrator.core.apply import StoredBatch
from orchestrator.core.cancel_policy import Attempt
from orchestrator.core.cancel_request import (
    CancelState,
    Move,
    Refusal,
    RequestSnapshot,
    Wish,
    after_attempt,
    open_request,
    withdraw,
)
from orchestrator.db.batches import (
    STATE_COLUMNS,
    STATE_NAMES,
    BatchSnapshot,
    BatchStore,
    EventRow,
    column_values,
    event_values,
    lock_requests,
    plan_batch_write,
    plan_values,
    planned_events,
    snapshot_of_values,
    unrepeated,
)
from orchestrator.db.database import Database, chunks, in_list
from orchestrator.db.leases import PROCESS_STALE_SECONDS, Leases
from orchestrator.db.models import (
    Batch,
    BatchEvent,
    CancelAttempt,
    CancelRequest,
    table_of,
)
from orchestrator.db.pauses import (
    SendingPause,
    active_pause,
    lift_pause_in,
    set_pause,
)

__all__ = ["CancelStore", "Claim", "RequestSummary", "WithdrawSummary"]

log = logging.getLogger(__name__)

FORGOTTEN = "forgotten"  # what ``record_attempts`` says of a request dropped meanwhile


@dataclass(frozen=True)
class Claim:
    batch_id: str
    attempts: int  # attempts made before this claim
    requested_at: datetime


@dataclass
class RequestSummary:
    new: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    closed_at_once: dict[str, str] = field(default_factory=dict)  # id -> outcome


@dataclass
class WithdrawSummary:
    withdrawn: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # id -> why it was kept


class CancelStore:
    def __init__(self, db: Database, *, stale_seconds: float = PROCESS_STALE_SECONDS) -> None:
        self.db = db
        self.batches = BatchStore(db)
        self.leases = Leases(
            db, table_of(CancelRequest), "batch_id", source="worker", stale_seconds=stale_seconds
        )

    # --- intent ---------------------------------------------------------------

    def request(
        self,
        batch_ids: Iterable[str],
        *,
        now: datetime,
        requested_by: str,
        reason: str | None = None,
    ) -> RequestSummary:
        """Record the wish to cancel; asking twice is harmless. Nothing is sent here.

        One transaction, a few bulk statements per 500 ids: an operator cancelling a
        whole fleet waits seconds, not minutes.
        """
        summary = RequestSummary()
        ids = sorted(set(batch_ids))
        wish = Wish(requested_by, reason)
        with self.db.transaction() as session:
            self.batches.ensure_rows(session, ids, now=now, source="cancel")
            batches = _lock_batches(self.db, session, ids)
            states = {i: r.state for i, r in lock_requests(self.db, session, ids).items()}
            new_rows: list[dict[str, object]] = []
            reopened_rows: list[dict[str, object]] = []
            events: list[EventRow] = []
            for batch_id in ids:
                plan = open_request(states.get(batch_id), batches[batch_id].stored, wish, now)
                if not plan.moves:
                    summary.already.append(batch_id)
                    continue
                (new_rows if Move.OPEN in plan.moves else reopened_rows).append(
                    {"batch_id": batch_id, **plan_values(plan.changes)}
                )
                (summary.new if Move.OPEN in plan.moves else summary.reopened).append(batch_id)
                if plan.outcome is not None:
                    summary.closed_at_once[batch_id] = plan.outcome
                events += planned_events(batch_id, plan.events, now, "operator")
            self.db.insert_rows(session, table_of(CancelRequest), new_rows)
            self.db.bulk_update(session, table_of(CancelRequest), "batch_id", reopened_rows)
            self.db.insert_rows(session, table_of(BatchEvent), events)
        return summary

    def withdraw(self, batch_ids: Iterable[str], *, now: datetime) -> WithdrawSummary:
        """Take back requests not sent yet (see ``core.cancel_request.withdraw``);
        the others are kept, each with the reason."""
        summary = WithdrawSummary()
        ids = sorted(set(batch_ids))
        with self.db.transaction() as session:
            requests = lock_requests(self.db, session, ids)
            rows: list[dict[str, object]] = []
            events: list[EventRow] = []
            for batch_id in ids:
                plan = withdraw(requests.get(batch_id), now)
                if isinstance(plan, Refusal):
                    summary.refused[batch_id] = plan.reason
                    continue
                summary.withdrawn.append(batch_id)
                rows.append({"batch_id": batch_id, **plan_values(plan.changes)})
                events += planned_events(batch_id, plan.events, now, "operator")
            self.db.bulk_update(session, table_of(CancelRequest), "batch_id", rows)
            self.db.insert_rows(session, table_of(BatchEvent), events)
        return summary

    # --- leasing --------------------------------------------------------------

    def claim_due(
        self, owner: str, *, now: datetime, limit: int, lease_seconds: float
    ) -> list[Claim]:
        """Lease up to `limit` due requests, the longest due first (see db/leases.py):
        one locking read (with what a Claim needs) and one write of the leases, built
        once and run on the driver."""
        with self.db.core_transaction() as connection:
            rows = self.leases.claim(
                connection,
                owner,
                now=now,
                lease_seconds=lease_seconds,
                due=_DUE,
                order_by=_DUE_FIRST,
                limit=limit,
                due_params={"due_at": now},
                columns=_CLAIMED,
            )
        return [Claim(str(r[0]), int(r[3]), r[4]) for r in rows]  # type: ignore[call-overload, arg-type]

    def due_count(self, now: datetime) -> int:
        """Pending requests whose next attempt is due (leased ones included)."""
        with self.db.transaction() as session:
            return int(
                session.scalar(
                    select(func.count()).where(
                        CancelRequest.state == CancelState.PENDING.value,
                        CancelRequest.next_attempt_at <= now,
                    )
                )
                or 0
            )

    def heartbeat(
        self, owner: str, batch_ids: Iterable[str], *, now: datetime, lease_seconds: float
    ) -> int:
        return self.leases.heartbeat(owner, batch_ids, now=now, lease_seconds=lease_seconds)

    def release(self, owner: str, batch_ids: Iterable[str]) -> int:
        """Give leases back untouched (clean shutdown): due again at once elsewhere."""
        return self.leases.release(owner, batch_ids)

    # --- outcomes -------------------------------------------------------------

    def record_attempt(self, claim: Claim, owner: str, attempt: Attempt) -> str:
        return self.record_attempts(owner, [(claim, attempt)])[claim.batch_id]

    def record_attempts(
        self, owner: str, finished: Sequence[tuple[Claim, Attempt]]
    ) -> dict[str, str]:
        """Record attempts and what follows from them, all in one transaction.

        The server's answer (a Batch) is applied even if our lease was lost
        meanwhile: it is the truth. A request's own state moves only while we
        hold its lease, so a worker presumed dead cannot overwrite a live one.
        Rows are locked batches first, then requests, each in id order: the
        order every other writer uses, so two processes cannot deadlock.
        Returns each request's state afterwards.

        An answer whose request is gone (``forget`` dropped the batch once the lease
        ran out, the answer still in flight) is dropped: logged, nothing written, its
        state said as ``forgotten``. An answer never creates a row.
        """
        if not finished:
            return {}
        ids = sorted({claim.batch_id for claim, _ in finished})
        observed_ids = sorted({c.batch_id for c, a in finished if a.observed is not None})
        with self.db.core_transaction() as connection:
            record = _Recording(
                owner,
                _lock_batches(self.db, connection, observed_ids),
                lock_requests(self.db, connection, ids),
            )
            gone: dict[str, str] = {}
            for claim, attempt in finished:
                if claim.batch_id in record.requests:
                    record.attempt(claim.batch_id, attempt)
                else:
                    gone[claim.batch_id] = FORGOTTEN
                    log.info(
                        "forgotten while its cancel was in flight: the answer (%s) is dropped",
                        attempt.outcome.value,
                        extra={"batch_id": claim.batch_id, "action": "cancel_dropped"},
                    )
            record.write(self.db, connection)
            states = {batch_id: r.state.value for batch_id, r in record.requests.items()}
            return {**states, **gone}

    # --- the shared stop on 401/403 --------------------------------------------

    def pause(self, reason: str, *, now: datetime, until: datetime) -> None:
        set_pause(self.db, reason, now=now, until=until)

    def active_pause(self, now: datetime) -> SendingPause | None:
        return active_pause(self.db, now)

    def resume(self, *, now: datetime) -> tuple[SendingPause | None, int]:
        """Lift the pause (an operator fixed the key). The cancels it held back, whose
        next attempt a 401/403 put off, are due at once. Returns the pause that was
        lifted (None if none was in force) and how many cancels became due."""
        with self.db.transaction() as session:
            pause = lift_pause_in(session)
            # Lock in id order, as every other writer does, before updating.
            held_back = list(
                session.scalars(
                    select(CancelRequest.batch_id)
                    .where(
                        CancelRequest.state == CancelState.PENDING.value,
                        CancelRequest.last_http_status.in_((401, 403)),
                        CancelRequest.next_attempt_at > now,
                    )
                    .order_by(CancelRequest.batch_id)
                    .with_for_update()
                )
            )
            for chunk in chunks(held_back):
                session.execute(
                    update(CancelRequest)
                    .where(CancelRequest.batch_id.in_(chunk))
                    .values(next_attempt_at=now)
                )
            active = pause if pause is not None and pause.until > now else None
            return active, len(held_back)


def _lock_batches_of(size: int) -> Select[tuple[object, ...]]:
    """The locking read of ``_lock_batches`` for an IN list of ``size`` (``rows_for_ids``)."""
    return (
        select(*STATE_COLUMNS)
        .where(Batch.id.in_(in_list(size)))
        .order_by(Batch.id)
        .with_for_update()
    )


_DUE = and_(  # a request to send: pending, its next attempt due (``_due_at``: now)
    CancelRequest.state == CancelState.PENDING.value,
    CancelRequest.next_attempt_at <= bindparam("_due_at"),
)
_DUE_FIRST = [CancelRequest.next_attempt_at]
_CLAIMED = (CancelRequest.attempts, CancelRequest.requested_at)


def _lock_batches(
    db: Database, on: Session | Connection, ids: Sequence[str]
) -> dict[str, BatchSnapshot]:
    """Lock batches in id order, the order every writer locks in (batches first, then
    requests), so no two wait on each other. Their STATE_COLUMNS, by id. Compiled once
    per IN list size and run on the driver, as ``lock_requests``."""
    rows = db.rows_for_ids(on, "lock-batches", _lock_batches_of, list(ids))
    snapshots = (snapshot_of_values(dict(zip(STATE_NAMES, row, strict=True))) for row in rows)
    return {snapshot.id: snapshot for snapshot in snapshots}


class _Recording:
    """The attempts of one transaction: the locked rows as the rules left them, and
    what to write. Plain bulk statements (no unit of work): this runs for every cancel."""

    def __init__(
        self,
        owner: str,
        batches: dict[str, BatchSnapshot],
        requests: dict[str, RequestSnapshot],
    ) -> None:
        self.owner = owner
        self.batches = batches
        self.requests = requests
        self.batch_changes: dict[str, dict[str, object]] = {}
        self.request_changes: dict[str, dict[str, object]] = {b: {} for b in requests}
        self.attempts: list[dict[str, object]] = []
        self.events: list[EventRow] = []

    def attempt(self, batch_id: str, attempt: Attempt) -> None:
        """Decide what one attempt changes, on its batch and on its request."""
        now = attempt.finished_at
        request = self.requests[batch_id]
        self.events += [
            event_values(batch_id, kind, now, "worker", detail=detail)
            for kind, detail in attempt.events
        ]
        batch = self.batches.get(batch_id)
        observed: StoredBatch | None = None  # the batch once the server's answer is applied
        if attempt.observed is not None and batch is not None:
            write = plan_batch_write(batch, attempt.observed, now=now, source="worker")
            self.batches[batch_id] = batch.after(write)
            self.batch_changes.setdefault(batch_id, {}).update(write.changes)
            self.events += write.events
            observed = write.after
        plan = after_attempt(request, attempt, observed, self.owner)
        self.requests[batch_id] = request.after(plan.changes)
        self.request_changes[batch_id].update(plan_values(plan.changes))
        self.events += planned_events(batch_id, plan.events, now, "worker")
        if plan.attempt is not None:  # None: held back by the budget, no attempt made
            self.attempts.append(_attempt_row(batch_id, plan.attempt, self.owner, attempt))

    def write(self, db: Database, session: Session | Connection) -> None:
        """Four writes whose results nobody reads: on PostgreSQL sent together, in one
        round trip (``Database.pipeline``), one statement each (``Database.bulk_update``)."""
        events = unrepeated(session, self.events)
        with db.pipeline(session):
            db.insert_rows(session, table_of(CancelAttempt), self.attempts)
            db.insert_rows(session, table_of(BatchEvent), events)
            db.bulk_update(
                session,
                table_of(Batch),
                "id",
                [{"id": i, **column_values(c)} for i, c in self.batch_changes.items()],
            )
            db.bulk_update(
                session,
                table_of(CancelRequest),
                "batch_id",
                [{"batch_id": i, **c} for i, c in self.request_changes.items()],
            )


def _attempt_row(batch_id: str, number: int, owner: str, attempt: Attempt) -> dict[str, object]:
    """The attempt's ``cancel_attempts`` row."""
    return {
        "batch_id": batch_id,
        "attempt": number,
        "worker": owner,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "http_status": attempt.http_status,
        "request_id": attempt.request_id,
        "outcome": attempt.outcome.value,
        "error": attempt.error,
    }
