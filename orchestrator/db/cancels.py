"""Durable cancel requests: record the intent, lease due ones, record every attempt."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from orchestrator.core.cancel_policy import AttemptOutcome
from orchestrator.core.observation import BatchObservation
from orchestrator.core.status import BatchStatus, parse_status
from orchestrator.db.batches import (
    STATE_COLUMNS,
    BatchStore,
    event_values,
    plan_batch_write,
    plan_cancel_close,
    unrepeated,
)
from orchestrator.db.database import Database, chunks
from orchestrator.db.leases import PROCESS_STALE_SECONDS, Leases
from orchestrator.db.models import (
    Batch,
    BatchEvent,
    CancelAttempt,
    CancelRequest,
    Pause,
    table_of,
)

log = logging.getLogger(__name__)
PAUSE_SCOPE = "api"
# A failed request asked for again starts clean: the old failure is history (in
# cancel_attempts and batch_events), not the new request's state.
REOPEN_RESET: dict[str, Any] = {
    "closed_at": None,
    "terminal_status": None,
    "seconds_to_terminal": None,
    "last_error": None,
    "last_http_status": None,
    "last_request_id": None,
}


@dataclass(frozen=True)
class Claim:
    batch_id: str
    attempts: int  # attempts made before this claim
    requested_at: datetime


@dataclass(frozen=True)
class Attempt:
    """One cancel attempt as the worker saw it."""

    outcome: AttemptOutcome
    started_at: datetime
    finished_at: datetime
    http_status: int | None = None
    request_id: str | None = None
    error: str | None = None
    observed: BatchObservation | None = None  # the 200 body, or the GET after a refusal
    retry_at: datetime | None = None  # for RETRY and AUTH
    # (kind, detail) to record on the batch: a wrong batch in the answer, an unexpected error
    events: tuple[tuple[str, str], ...] = ()


@dataclass
class RequestSummary:
    new: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    closed_at_once: dict[str, str] = field(default_factory=dict)  # id -> outcome


@dataclass(frozen=True)
class Wish:
    """Who asked to cancel, and why."""

    requested_by: str
    reason: str | None

    @property
    def detail(self) -> str:
        return f"by {self.requested_by}" + (f": {self.reason}" if self.reason else "")


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
            batches, states = _lock_for_request(session, ids)
            new_rows: list[dict[str, Any]] = []
            reopened_rows: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for batch_id in ids:
                state = states.get(batch_id)
                if state is not None and state != "failed":
                    summary.already.append(batch_id)
                    continue
                values = _opened(batch_id, batches[batch_id], now, wish, events, summary)
                if state is None:
                    summary.new.append(batch_id)
                    new_rows.append({**values, "attempts": 0})
                else:
                    summary.reopened.append(batch_id)
                    reopened_rows.append({**REOPEN_RESET, **values})
            self.db.insert_rows(session, table_of(CancelRequest), new_rows)
            self.db.bulk_update(session, table_of(CancelRequest), "batch_id", reopened_rows)
            self.db.insert_rows(session, table_of(BatchEvent), events)
        return summary

    # --- leasing --------------------------------------------------------------

    def claim_due(
        self, owner: str, *, now: datetime, limit: int, lease_seconds: float
    ) -> list[Claim]:
        """Lease up to `limit` due requests, the longest due first (see db/leases.py)."""
        with self.db.transaction() as session:
            ids = self.leases.claim(
                session,
                owner,
                now=now,
                lease_seconds=lease_seconds,
                due=and_(CancelRequest.state == "pending", CancelRequest.next_attempt_at <= now),
                order_by=[CancelRequest.next_attempt_at],
                limit=limit,
            )
            if not ids:
                return []
            rows = {
                row.batch_id: row
                for row in session.execute(
                    select(
                        CancelRequest.batch_id, CancelRequest.attempts, CancelRequest.requested_at
                    ).where(CancelRequest.batch_id.in_(ids))
                )
            }
        return [Claim(i, rows[i].attempts, rows[i].requested_at) for i in ids]

    def due_count(self, now: datetime) -> int:
        """Pending requests whose next attempt is due (leased ones included)."""
        with self.db.transaction() as session:
            return int(
                session.scalar(
                    select(func.count()).where(
                        CancelRequest.state == "pending", CancelRequest.next_attempt_at <= now
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
        """
        if not finished:
            return {}
        ids = sorted({claim.batch_id for claim, _ in finished})
        observed_ids = sorted({c.batch_id for c, a in finished if a.observed is not None})
        attempt_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        with self.db.transaction() as session:
            batches = (
                {
                    row.id: _Pending(row)
                    for row in session.execute(
                        select(*STATE_COLUMNS)
                        .where(Batch.id.in_(observed_ids))
                        .order_by(Batch.id)
                        .with_for_update()
                    )
                }
                if observed_ids
                else {}
            )
            requests = {
                row.batch_id: _Pending(row)
                for row in session.execute(
                    select(*REQUEST_COLUMNS)
                    .where(CancelRequest.batch_id.in_(ids))
                    .order_by(CancelRequest.batch_id)
                    .with_for_update()
                )
            }
            for claim, attempt in finished:
                request = requests[claim.batch_id]
                batch = batches.get(claim.batch_id)
                attempt_rows.append(_record_one(owner, request, attempt, batch, event_rows))
            # Plain bulk statements (no unit of work): this runs for every cancel sent.
            self.db.insert_rows(session, table_of(CancelAttempt), attempt_rows)
            self.db.insert_rows(session, table_of(BatchEvent), unrepeated(session, event_rows))
            self.db.bulk_update(
                session,
                table_of(Batch),
                "id",
                [b.update_row("id") for b in batches.values() if b.changes],
            )
            self.db.bulk_update(
                session,
                table_of(CancelRequest),
                "batch_id",
                [r.update_row("batch_id") for r in requests.values()],
            )
            return {batch_id: str(request.state) for batch_id, request in requests.items()}

    # --- the shared stop on 401/403 --------------------------------------------

    def pause(self, reason: str, *, now: datetime, until: datetime) -> None:
        values = {"reason": reason, "paused_at": now, "until": until}
        with self.db.transaction() as session:
            # Several workers can hit 401 at once: insert-or-ignore, then update.
            session.execute(
                self.db.insert_ignoring_conflicts(table_of(Pause)),
                [{"scope": PAUSE_SCOPE, **values}],
            )
            session.execute(update(Pause).where(Pause.scope == PAUSE_SCOPE).values(**values))

    def active_pause(self, now: datetime) -> Pause | None:
        with self.db.transaction() as session:
            pause = session.get(Pause, PAUSE_SCOPE)
            return pause if pause is not None and pause.until > now else None

    def resume(self, *, now: datetime) -> tuple[Pause | None, int]:
        """Lift the pause (an operator fixed the key). The cancels it held back, whose
        next attempt a 401/403 put off, are due at once. Returns the pause that was
        lifted (None if none was in force) and how many cancels became due."""
        with self.db.transaction() as session:
            pause = session.get(Pause, PAUSE_SCOPE, with_for_update=True)
            if pause is not None:
                session.delete(pause)
            # Lock in id order, as every other writer does, before updating.
            held_back = list(
                session.scalars(
                    select(CancelRequest.batch_id)
                    .where(
                        CancelRequest.state == "pending",
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


REQUEST_COLUMNS = (
    CancelRequest.batch_id,
    CancelRequest.state,
    CancelRequest.attempts,
    CancelRequest.lease_owner,
    CancelRequest.requested_at,
)


class _Pending:
    """A locked row plus the changes decided for it; reads see the changes."""

    def __init__(self, row: Any) -> None:
        self._row = row
        self.changes: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name in self.changes:
            return self.changes[name]
        return getattr(self._row, name)

    def set(self, **values: Any) -> None:
        self.changes.update(values)

    def update_row(self, key: str) -> dict[str, Any]:
        """The key and the changes, by column name (`metadata_` is the `metadata` column)."""
        columns = {("metadata" if k == "metadata_" else k): v for k, v in self.changes.items()}
        return {key: getattr(self._row, key), **columns}


def _lock_for_request(session: Session, ids: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Lock every batch, then every request, each in id order: the order every writer
    locks in (the worker locks some batches, then requests), so no two wait on each
    other. Returns the batches' state columns and the requests' states, by id."""
    batches: dict[str, Any] = {}
    states: dict[str, str] = {}
    for chunk in chunks(ids):
        batches.update(
            (row.id, row)
            for row in session.execute(
                select(*STATE_COLUMNS)
                .where(Batch.id.in_(chunk))
                .order_by(Batch.id)
                .with_for_update()
            )
        )
    for chunk in chunks(ids):
        states.update(
            (row.batch_id, row.state)
            for row in session.execute(
                select(CancelRequest.batch_id, CancelRequest.state)
                .where(CancelRequest.batch_id.in_(chunk))
                .order_by(CancelRequest.batch_id)
                .with_for_update()
            )
        )
    return batches, states


def _opened(
    batch_id: str,
    batch: Any,
    now: datetime,
    wish: Wish,
    events: list[dict[str, Any]],
    summary: RequestSummary,
) -> dict[str, Any]:
    """A request opened (or reopened after a failure) now: its columns, and its events."""
    values: dict[str, Any] = {
        "batch_id": batch_id,
        "requested_at": now,
        "requested_by": wish.requested_by,
        "reason": wish.reason,
        "state": "pending",
        "outcome": None,
        "next_attempt_at": now,
    }
    events.append(event_values(batch_id, "cancel_requested", now, "operator", detail=wish.detail))
    status = parse_status(batch.status) if batch.status else None
    # What we already know can spare the API a pointless call.
    if status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        values.update(state="accepted", next_attempt_at=None)
    close = plan_cancel_close(batch, values["state"], now, now=now, source="operator")
    if close is not None:
        values.update(close.changes)
        events.append(close.event)
        summary.closed_at_once[batch_id] = close.outcome
    return values


def _record_one(
    owner: str,
    request: _Pending,
    attempt: Attempt,
    batch: _Pending | None,
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    """Decide what one attempt changes; returns its `cancel_attempts` row."""
    now = attempt.finished_at
    number = request.attempts + 1
    request.set(
        attempts=number,
        last_attempt_at=now,
        last_http_status=attempt.http_status,
        last_error=attempt.error,
        last_request_id=attempt.request_id,
    )
    owned = request.lease_owner == owner
    events += [
        event_values(request.batch_id, kind, now, "worker", detail=detail)
        for kind, detail in attempt.events
    ]
    if attempt.observed is not None and batch is not None:
        write = plan_batch_write(batch, attempt.observed, now=now, source="worker")
        batch.set(**write.changes)
        events += write.events
        close = plan_cancel_close(
            batch, request.state, request.requested_at, now=now, source="worker"
        )
        if close is not None:
            request.set(**close.changes)
            events.append(close.event)
    if owned and request.state == "pending":
        _settle(request, attempt, events)
    if owned:
        request.set(lease_owner=None, lease_expires_at=None)
    return {
        "batch_id": request.batch_id,
        "attempt": number,
        "worker": owner,
        "started_at": attempt.started_at,
        "finished_at": now,
        "http_status": attempt.http_status,
        "request_id": attempt.request_id,
        "outcome": attempt.outcome.value,
        "error": attempt.error,
    }


def _settle(request: _Pending, attempt: Attempt, events: list[dict[str, Any]]) -> None:
    now = attempt.finished_at
    outcome = attempt.outcome
    if outcome is AttemptOutcome.ACCEPTED:
        request.set(state="accepted", accepted_at=now, next_attempt_at=None)
        detail = f"cancel accepted (HTTP {attempt.http_status}, {attempt.request_id or '-'})"
        events.append(
            event_values(request.batch_id, "cancel_accepted", now, "worker", detail=detail)
        )
    elif outcome in (AttemptOutcome.NOT_FOUND, AttemptOutcome.INVALID, AttemptOutcome.TOO_LATE):
        # TOO_LATE normally closes through the observation; this is the fallback.
        request.set(
            state="failed" if outcome is not AttemptOutcome.TOO_LATE else "closed",
            outcome=outcome.value,
            closed_at=now,
            next_attempt_at=None,
        )
        events.append(
            event_values(
                request.batch_id, f"cancel_{outcome.value}", now, "worker", detail=attempt.error
            )
        )
    else:
        request.set(next_attempt_at=attempt.retry_at or now)
