"""The cancel request's lifecycle: its states, its moves and their guards. Pure.

A request's ``state``::

    open ──▶ pending ──accept──▶ accepted ──close──▶ closed
               │  ▲ retry, hold                        ▲
               │  └──┘                                 │
               ├──close (the batch ended) ─────────────┘
               ├──fail (404, an id never sendable) ──▶ failed ────┐
               └──withdraw (never sent, not leased) ─▶ withdrawn ─┤
                                                                  │
    pending ◀──reopen (asked for again) ──────────────────────────┘

States only move forward (``CancelState.rank``); the one way back is ``reopen``,
and only from ``failed`` or ``withdrawn``. A ``closed`` request never reopens:
its batch has ended, there is nothing left to cancel.

Each move takes what it needs of the stored request (``RequestSnapshot``), of
the batch (``core.apply.StoredBatch``) and ``now``, and returns a
``RequestPlan``: the columns to write and the events to record. The stores in
``db/`` lock rows, build snapshots, call these and write the plans; the dry-run
planner (``cli/cancel_plan.py``) calls the same ``open_request``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypedDict

from orchestrator.core.apply import StoredBatch
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.cancel_state import (
    CANCEL_STATES,
    FINAL_STATES,
    OPEN_STATES,
    REOPENABLE_STATES,
    CancelState,
)
from orchestrator.core.events import PlannedEvent
from orchestrator.core.status import BatchStatus

__all__ = [
    "CANCEL_STATES",
    "FINAL_STATES",
    "OPEN_STATES",
    "REOPENABLE_STATES",
    "CancelState",
    "Move",
    "PlannedEvent",
    "Refusal",
    "RequestColumns",
    "RequestPlan",
    "RequestSnapshot",
    "Wish",
    "after_attempt",
    "close",
    "hold",
    "open_request",
    "settle",
    "withdraw",
]


class Move(StrEnum):
    OPEN = "open"
    REOPEN = "reopen"
    ACCEPT = "accept"
    RETRY = "retry"
    HOLD = "hold"  # not sent (the shared request budget): put off, no attempt made
    CLOSE = "close"
    FAIL = "fail"
    WITHDRAW = "withdraw"


class RequestColumns(TypedDict, total=False):
    """``cancel_requests`` columns a plan sets (a key left out is left unchanged)."""

    batch_id: str
    requested_at: datetime
    requested_by: str
    reason: str | None
    state: CancelState
    outcome: str | None
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_http_status: int | None
    last_error: str | None
    last_request_id: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    accepted_at: datetime | None
    closed_at: datetime | None
    terminal_status: str | None
    seconds_to_terminal: float | None


@dataclass(frozen=True)
class RequestSnapshot:
    """What the rules read of a stored request."""

    batch_id: str
    state: CancelState
    requested_at: datetime
    attempts: int  # made so far
    lease_owner: str | None  # the worker holding it, if any

    def after(self, changes: RequestColumns) -> RequestSnapshot:
        """This request as it will be once ``changes`` are written."""
        return RequestSnapshot(  # not dataclasses.replace: this runs thrice an attempt
            self.batch_id,
            changes.get("state", self.state),
            changes.get("requested_at", self.requested_at),
            changes.get("attempts", self.attempts),
            changes.get("lease_owner", self.lease_owner),
        )


@dataclass(frozen=True)
class RequestPlan:
    moves: tuple[Move, ...] = ()
    changes: RequestColumns = field(default_factory=lambda: RequestColumns())
    events: tuple[PlannedEvent, ...] = ()
    outcome: str | None = None  # set by ``close``: cancelled, or too_late:<status>
    # set by ``after_attempt``: the number of the ``cancel_attempts`` row to record; None
    # for none (a cancel the shared request budget held back is no attempt, ``hold``)
    attempt: int | None = None

    def then(self, other: RequestPlan) -> RequestPlan:
        """This plan followed by ``other`` (whose columns win)."""
        changes = RequestColumns()
        changes.update(self.changes)
        changes.update(other.changes)
        return RequestPlan(
            self.moves + other.moves,
            changes,
            self.events + other.events,
            other.outcome or self.outcome,
            other.attempt if other.attempt is not None else self.attempt,
        )


NOTHING = RequestPlan()


@dataclass(frozen=True)
class Refusal:
    """A move whose guard said no, and why (in words for the operator)."""

    reason: str


@dataclass(frozen=True)
class Wish:
    """Who asked to cancel, and why."""

    requested_by: str
    reason: str | None

    @property
    def detail(self) -> str:
        return f"by {self.requested_by}" + (f": {self.reason}" if self.reason else "")


# --- asking -----------------------------------------------------------------------------


def open_request(
    current: CancelState | None, batch: StoredBatch, wish: Wish, now: datetime
) -> RequestPlan:
    """Someone asks to cancel the batch now.

    No request yet: ``open``. A failed or withdrawn one: ``reopen``, clean. Any
    other: nothing (asking twice is harmless). What we already know of the batch
    can spare the API a call: cancelling or cancelled is accepted at once, and an
    ended batch closes the request at once.
    """
    if current is not None and current not in REOPENABLE_STATES:
        return NOTHING
    columns = RequestColumns(
        requested_at=now,
        requested_by=wish.requested_by,
        reason=wish.reason,
        state=CancelState.PENDING,
        outcome=None,
        next_attempt_at=now,
    )
    if current is None:
        columns["attempts"] = 0
        move = Move.OPEN
    else:
        columns.update(_REOPEN_RESET)
        move = Move.REOPEN
    plan = RequestPlan((move,), columns, (PlannedEvent("cancel_requested", wish.detail),))
    if batch.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        # Our cancel (or someone's) already took: no cancel_accepted event, nothing sent.
        plan = plan.then(
            RequestPlan(
                (Move.ACCEPT,),
                RequestColumns(state=CancelState.ACCEPTED, next_attempt_at=None),
            )
        )
    opened = RequestSnapshot("", CancelState.PENDING, now, 0, None).after(plan.changes)
    return plan.then(close(opened, batch, now))


# A reopened request starts clean: the old failure is history, not its state.
_REOPEN_RESET = RequestColumns(
    closed_at=None,
    terminal_status=None,
    seconds_to_terminal=None,
    last_error=None,
    last_http_status=None,
    last_request_id=None,
)


def withdraw(request: RequestSnapshot | None, now: datetime) -> RequestPlan | Refusal:
    """Take back a request that was never sent.

    Only a pending one with no attempt made and no worker holding it: a leased
    request may be on the wire this very moment, and a sent one may already
    have worked (the batch's own status will tell).
    """
    if request is None:
        return Refusal("no cancel was requested")
    if request.state is not CancelState.PENDING:
        return Refusal(f"the request is {request.state.value}, not pending")
    if request.attempts > 0:
        return Refusal(f"already sent ({request.attempts} attempt(s))")
    if request.lease_owner is not None:
        return Refusal(f"a worker ({request.lease_owner}) may be sending it now")
    columns = RequestColumns(
        state=CancelState.WITHDRAWN,
        outcome="withdrawn",
        closed_at=now,
        next_attempt_at=None,
    )
    return RequestPlan(
        (Move.WITHDRAW,), columns, (PlannedEvent("cancel_withdrawn", "taken back before sending"),)
    )


# --- the batch ended --------------------------------------------------------------------


def close(request: RequestSnapshot, batch: StoredBatch, now: datetime) -> RequestPlan:
    """Close an open request once its batch is terminal (``batch`` as updated)."""
    status = batch.status
    if status is None or not status.is_terminal or request.state.is_final:
        return NOTHING
    terminal_at = batch.timestamps.get(status.timestamp_field) or now
    outcome = "cancelled" if status is BatchStatus.CANCELLED else f"too_late:{status.value}"
    waited = (terminal_at - request.requested_at).total_seconds()
    columns = RequestColumns(
        state=CancelState.CLOSED,
        outcome=outcome,
        closed_at=now,
        terminal_status=status.value,
        next_attempt_at=None,
        lease_owner=None,
        lease_expires_at=None,
        # Ended before anyone asked: there is no "time to terminal" to speak of.
        seconds_to_terminal=waited if waited >= 0 else None,
    )
    event = PlannedEvent("cancel_closed", f"outcome {outcome}")
    return RequestPlan((Move.CLOSE,), columns, (event,), outcome)


# --- an attempt came back ---------------------------------------------------------------


def after_attempt(
    request: RequestSnapshot, attempt: Attempt, batch: StoredBatch | None, owner: str
) -> RequestPlan:
    """What one attempt changes on its request.

    ``batch`` is the batch once the attempt's observation (if any) was applied:
    the server's answer is the truth even if our lease was lost meanwhile, so
    it may close the request. The request's own state, and the last attempt it
    shows, move only while ``owner`` holds its lease, so a worker presumed dead
    cannot overwrite a live one (a late 503 over the live worker's 401 would hide
    the request from ``resume``); its attempt is counted and in the history all
    the same.

    A cancel the shared request budget held back (``attempt.went_out`` False) is no
    attempt: ``hold``.
    """
    if not attempt.went_out:
        return hold(request, attempt, owner)
    now = attempt.finished_at
    owned = request.lease_owner == owner
    number = request.attempts + 1
    counted = RequestColumns(attempts=number)
    if owned:
        counted.update(
            RequestColumns(
                last_attempt_at=now,
                last_http_status=attempt.http_status,
                last_error=attempt.error,
                last_request_id=attempt.request_id,
            )
        )
    plan = RequestPlan(changes=counted, attempt=number)
    if batch is not None:
        plan = plan.then(close(request.after(plan.changes), batch, now))
    if not owned:
        return plan
    plan = plan.then(settle(request.after(plan.changes), attempt))
    return plan.then(RequestPlan(changes=RequestColumns(lease_owner=None, lease_expires_at=None)))


def hold(request: RequestSnapshot, attempt: Attempt, owner: str) -> RequestPlan:
    """A cancel the shared request budget held back: nothing left the host.

    Only its next attempt moves, to when the budget lets it go (``retry_at``), and its
    lease is given back. ``attempts`` stays as it is, and the plan has no attempt to
    record (``RequestPlan.attempt``): an attempt is a request that went out. So
    ``withdraw`` still takes back a cancel that was only ever held, and the durable
    backoff after its first real failure is the first one, however often it was held
    before. Not ours (our lease was lost meanwhile): nothing at all, the request is
    another worker's.
    """
    if request.lease_owner != owner:
        return NOTHING
    release = RequestColumns(lease_owner=None, lease_expires_at=None)
    if request.state is not CancelState.PENDING:
        return RequestPlan(changes=release)
    columns = RequestColumns(next_attempt_at=attempt.retry_at or attempt.finished_at)
    columns.update(release)
    return RequestPlan((Move.HOLD,), columns)


def settle(request: RequestSnapshot, attempt: Attempt) -> RequestPlan:
    """A pending request after its attempt's outcome: accept, fail, close or retry."""
    if request.state is not CancelState.PENDING:
        return NOTHING
    now = attempt.finished_at
    outcome = attempt.outcome
    if outcome is AttemptOutcome.ACCEPTED:
        detail = f"cancel accepted (HTTP {attempt.http_status}, {attempt.request_id or '-'})"
        columns = RequestColumns(state=CancelState.ACCEPTED, accepted_at=now, next_attempt_at=None)
        return RequestPlan((Move.ACCEPT,), columns, (PlannedEvent("cancel_accepted", detail),))
    if outcome in (AttemptOutcome.NOT_FOUND, AttemptOutcome.INVALID, AttemptOutcome.TOO_LATE):
        # TOO_LATE normally closes through the observation; this is the fallback.
        too_late = outcome is AttemptOutcome.TOO_LATE
        columns = RequestColumns(
            state=CancelState.CLOSED if too_late else CancelState.FAILED,
            outcome=outcome.value,
            closed_at=now,
            next_attempt_at=None,
        )
        event = PlannedEvent(f"cancel_{outcome.value}", attempt.error)
        return RequestPlan((Move.CLOSE if too_late else Move.FAIL,), columns, (event,))
    return RequestPlan((Move.RETRY,), RequestColumns(next_attempt_at=attempt.retry_at or now))
