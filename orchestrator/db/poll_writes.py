"""Recording successful polls in bulk: one plan per batch, plain statements per page.

A GET's answer and a list page's 100 batches are recorded by the same code: each
locked batch is read as a ``PolledRow`` (plain columns, no ORM objects), and
``plan_recording`` decides, through the rules of ``core/`` (apply the observation,
close a cancel request, plan the next poll, follow the harvest), every column to
write and every event to record. ``record_polled`` then writes a whole page with a
handful of statements: one SELECT that locks, one INSERT of all the events, one
executemany of UPDATEs per set of changed columns (most batches of a page change
the same columns: their next poll, their lease, the poll count). A single GET is a
page of one, so a page records exactly what GETs of its batches would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from orchestrator.core.cancel_request import RequestSnapshot, close
from orchestrator.core.harvest import HarvestSnapshot, HarvestState, observe
from orchestrator.core.observation import BatchObservation
from orchestrator.core.poll_policy import PolledBatch, PollPlan, PollPolicy, plan_poll
from orchestrator.core.status import BatchStatus
from orchestrator.db.batches import (
    STATE_COLUMNS,
    BatchSnapshot,
    EventRow,
    column_values,
    event_values,
    lock_requests,
    plan_batch_write,
    plan_values,
    planned_events,
    snapshot_of_row,
    unrepeated,
)
from orchestrator.db.database import Database, chunks
from orchestrator.db.models import Batch, BatchEvent, CancelRequest, WebhookEvent, table_of

__all__ = [
    "POLL_COLUMNS",
    "PollRecord",
    "PollTerms",
    "PolledRow",
    "plan_recording",
    "record_polled",
]

SOURCE = "reconciler"

# What the poll rules read beyond what applying an observation reads.
POLL_COLUMNS = (
    *STATE_COLUMNS,
    Batch.status_changed_at,
    Batch.lease_owner,
    Batch.overdue_since,
    Batch.terminal_polls,
    Batch.polls,
    Batch.poll_failures,
    Batch.harvest_state,
    Batch.results_stored,
    Batch.result_line_errors,
)


@dataclass(frozen=True)
class PollTerms:
    """How an observation is recorded: ``now`` (when its GET began), by whom, and how
    the next poll is planned (``webhooks``: they are flowing)."""

    now: datetime
    owner: str
    policy: PollPolicy
    lease_seconds: float
    webhooks: bool = False


@dataclass(frozen=True)
class PollRecord:
    batch_id: str
    status: BatchStatus | None
    became_terminal: bool
    harvest: bool  # terminal with a file, and the lease is still ours: download now
    newly_overdue: bool
    cancel_closed: str | None
    output_file_id: str | None
    error_file_id: str | None
    anomalies: tuple[str, ...]

    @property
    def file_ids(self) -> list[tuple[str, str]]:
        pairs = (("output", self.output_file_id), ("error", self.error_file_id))
        return [(kind, file_id) for kind, file_id in pairs if file_id]


@dataclass(frozen=True)
class PolledRow:
    """A locked batch as the poll rules read it."""

    batch: BatchSnapshot
    status_changed_at: datetime | None
    lease_owner: str | None
    overdue_since: datetime | None
    terminal_polls: int
    polls: int
    poll_failures: int
    harvest_state: str
    results_stored: int
    result_line_errors: int

    @staticmethod
    def of(row: Row[tuple[object, ...]], holder: str | None = None) -> PolledRow:
        """From a Row of ``POLL_COLUMNS``; ``holder``: whose lease it is now, if the row
        says otherwise (a page's batches are leased in the write that records them)."""
        return PolledRow(
            snapshot_of_row(row),
            row.status_changed_at,
            holder or row.lease_owner,
            row.overdue_since,
            row.terminal_polls,
            row.polls,
            row.poll_failures,
            row.harvest_state,
            row.results_stored,
            row.result_line_errors,
        )


@dataclass(frozen=True)
class Recording:
    """What one observation writes: the batch's columns (attribute names), its events
    in order, and its cancel request's columns if the observation closed it."""

    record: PollRecord
    changes: dict[str, object]
    events: list[EventRow]
    request_changes: dict[str, object] | None


def plan_recording(
    row: PolledRow,
    observed: BatchObservation,
    terms: PollTerms,
    u: float,
    *,
    arrived: bool,
    request: RequestSnapshot | None,
) -> Recording:
    """Everything a successful poll of ``row`` decides, by the rules of ``core/``.

    ``arrived``: a webhook for the batch was recorded since ``terms.now`` (it may tell
    of a change the GET was too early to see: the batch stays due at once).
    ``request``: the batch's cancel request, locked, if it has one and the batch is
    terminal once observed (its outcome is settled then)."""
    now, policy = terms.now, terms.policy
    holds = row.lease_owner == terms.owner
    write = plan_batch_write(row.batch, observed, now=now, source=SOURCE)
    after = row.batch.after(write).stored
    events = list(write.events)
    # The cancel request, once the batch is over (core/cancel_request.close).
    closed: str | None = None
    request_changes: dict[str, object] | None = None
    if after.status is not None and after.status.is_terminal and request is not None:
        closing = close(request, after, now)
        if closing.moves:
            closed = closing.outcome
            request_changes = plan_values(closing.changes)
            events += planned_events(row.batch.id, closing.events, now, SOURCE)
    # The next poll (core/poll_policy.plan_poll).
    status_text = after.status.value if after.status is not None else row.batch.status_text
    changed_at = write.changes.get("status_changed_at", row.status_changed_at)
    assert changed_at is None or isinstance(changed_at, datetime)
    terminal = after.status is not None and after.status.is_terminal
    terminal_polls = row.terminal_polls + (1 if terminal else 0)
    plan = plan_poll(
        policy,
        PolledBatch(
            status=after.status,
            timestamps=after.timestamps,
            status_changed_at=changed_at,
            output_file_id=after.output_file_id,
            error_file_id=after.error_file_id,
            terminal_polls=terminal_polls,
            overdue_since=row.overdue_since,
        ),
        now=now,
        u=u,
        webhooks=terms.webhooks,
    )
    if plan.next_poll_at is not None and plan.next_poll_at > now and arrived:
        plan = dataclasses.replace(plan, next_poll_at=now)
    # The harvest follows the poll (core/harvest.observe).
    harvest = observe(
        HarvestSnapshot(
            state=HarvestState(row.harvest_state),
            status=status_text,
            terminal_polls=terminal_polls,
            poll_failures=row.poll_failures,
            status_changed_at=changed_at,
            results_stored=row.results_stored,
            result_line_errors=row.result_line_errors,
        ),
        plan.harvest_state,
        now,
    )
    changes = {
        **write.changes,
        **_poll_changes(row, plan, now, holds, terminal_polls, terms.lease_seconds),
        **plan_values(harvest.changes),
    }
    events += _poll_events(row.batch.id, status_text, plan, now, policy)
    events += planned_events(row.batch.id, harvest.events, now, SOURCE)
    record = PollRecord(
        batch_id=row.batch.id,
        status=after.status,
        became_terminal=write.applied.became_terminal,
        harvest=plan.harvest and holds,
        newly_overdue=plan.newly_overdue,
        cancel_closed=closed,
        output_file_id=after.output_file_id,
        error_file_id=after.error_file_id,
        anomalies=tuple(a.detail for a in write.applied.anomalies),
    )
    return Recording(record, changes, events, request_changes)


def record_polled(
    db: Database,
    session: Session,
    observed: Mapping[str, BatchObservation],
    terms: PollTerms,
    u: Callable[[], float],
    locked: Sequence[PolledRow] | None = None,
) -> list[PollRecord]:
    """Lock the batches of ``observed`` (id order, as every writer locks), record each
    observation, and write them all: a few statements for the whole page. ``u`` draws
    each batch's random unit, in id order. ``locked``: the rows, locked and read by
    the caller already (in id order).

    Only rows that exist are written, and only by UPDATE: a poll never creates a
    batch's row (an operator's ``track``, ``cancel`` or ``sync``, or a webhook's
    adoption, does). A batch whose row is gone (``forget`` dropped it while its poll
    was in flight) has no record in the list returned."""
    rows = list(locked) if locked is not None else _lock(session, sorted(observed))
    arrivals = _arrivals(session, [r.batch.id for r in rows], terms.now)
    ended = [r.batch.id for r in rows if _ends(r, observed[r.batch.id])]
    requests = lock_requests(db, session, ended)
    plans = [
        plan_recording(
            row,
            observed[row.batch.id],
            terms,
            u(),
            arrived=row.batch.id in arrivals,
            request=requests.get(row.batch.id),
        )
        for row in rows
    ]
    events = [e for p in plans for e in p.events]
    db.insert_rows(session, table_of(BatchEvent), unrepeated(session, events))
    db.bulk_update(
        session,
        table_of(Batch),
        "id",
        [{"id": p.record.batch_id, **column_values(p.changes)} for p in plans],
    )
    db.bulk_update(
        session,
        table_of(CancelRequest),
        "batch_id",
        [{"batch_id": p.record.batch_id, **p.request_changes} for p in plans if p.request_changes],
    )
    return [p.record for p in plans]


def _lock(session: Session, ids: Sequence[str]) -> list[PolledRow]:
    rows: list[PolledRow] = []
    for chunk in chunks(list(ids)):
        statement = (
            select(*POLL_COLUMNS).where(Batch.id.in_(chunk)).order_by(Batch.id).with_for_update()
        )
        rows += [PolledRow.of(row) for row in session.execute(statement)]
    return rows


def _ends(row: PolledRow, observed: BatchObservation) -> bool:
    """Might this observation leave the batch terminal (its cancel request is read)?"""
    return any(s is not None and s.is_terminal for s in (observed.status, row.batch.stored.status))


def _arrivals(session: Session, ids: Sequence[str], since: datetime) -> set[str]:
    """The batches with a webhook recorded at or after ``since``."""
    found: set[str] = set()
    for chunk in chunks(list(ids)):
        found.update(
            i
            for i in session.scalars(
                select(WebhookEvent.batch_id).where(
                    WebhookEvent.batch_id.in_(chunk), WebhookEvent.received_at >= since
                )
            )
            if i is not None
        )
    return found


def _poll_changes(
    row: PolledRow,
    plan: PollPlan,
    now: datetime,
    holds: bool,
    terminal_polls: int,
    lease_seconds: float,
) -> dict[str, object]:
    changes: dict[str, object] = {
        "polls": row.polls + 1,
        "poll_failures": 0,
        "last_error": None,
        "last_polled_at": now,
        "terminal_polls": terminal_polls,
        "overdue_since": plan.overdue_since,
    }
    if not holds:
        return changes  # the schedule and the lease belong to whoever holds it now
    changes["next_poll_at"] = plan.next_poll_at
    if plan.harvest:  # the lease is kept for the download (it may be this write's own)
        changes["lease_owner"] = row.lease_owner
        changes["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
    else:
        changes["lease_owner"] = None
        changes["lease_expires_at"] = None
    return changes


def _poll_events(
    batch_id: str, status: str | None, plan: PollPlan, now: datetime, policy: PollPolicy
) -> list[EventRow]:
    if plan.newly_overdue and plan.overdue_since is not None:
        limit = (
            policy.overdue_cancelling_seconds
            if status == BatchStatus.CANCELLING
            else policy.overdue_finalizing_seconds
        )
        detail = (
            f"{status} for more than {limit:g}s (overdue since "
            f"{plan.overdue_since.isoformat()}); still polling"
        )
        return [event_values(batch_id, "overdue", now, SOURCE, detail=detail)]
    if plan.no_longer_overdue:
        return [event_values(batch_id, "overdue_ended", now, SOURCE, detail=f"now {status}")]
    return []
