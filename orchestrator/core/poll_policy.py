"""When to poll a batch next, when it is overdue, and when to stop waiting for files.

Pure: ``now`` and the jitter draw ``u`` (in [0, 1)) are arguments.

- The delay grows geometrically with the time the batch has spent in its status:
  a series ``initial * factor**k`` has, after k polls, covered
  ``initial * (factor**k - 1) / (factor - 1)`` seconds, so the next delay is
  ``initial + (factor - 1) * seconds_in_status``. Basing it on time rather than a
  per-status poll counter needs no extra column and survives restarts.
- ``cancelling`` is capped lower: the documented bound is 10 minutes and the
  moment it ends is when partial results appear.
- After failures the delay doubles per consecutive failure, up to the error cap,
  and a server's Retry-After is honoured in full.
- Overdue: cancelling or finalizing for longer than its threshold, measured from
  the server's own timestamp when it sent one, else from when we recorded the
  status. Overdue never fails a batch: it is an alert; polling goes on.
- While webhooks flow (``webhooks=True``: an event arrived recently, judged by the
  caller on the database's clock), a batch that is not terminal is polled only every
  ``webhook_poll_seconds``: its terminal event makes it due at once, and the poll is
  the safety net for an event that never comes. When they go quiet the caller passes
  False and the normal delays apply again.
- A terminal batch with neither file id is polled again (quickly) a few times
  before we conclude it has no results: ids may be attached after the status flips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.core.harvest import HarvestState
from orchestrator.core.status import BatchStatus

__all__ = ["PollPlan", "PollPolicy", "PolledBatch", "plan_poll"]


def _check_unit(u: float) -> None:
    if not 0.0 <= u < 1.0:
        raise ValueError(f"jitter draw u must be in [0, 1), got {u!r}")


@dataclass(frozen=True, kw_only=True)
class PollPolicy:
    initial_seconds: float = 5.0
    backoff_factor: float = 1.5
    max_seconds: float = 300.0
    cancelling_max_seconds: float = 30.0
    error_max_seconds: float = 600.0
    overdue_cancelling_seconds: float = 600.0
    overdue_finalizing_seconds: float = 3600.0
    file_id_repolls: int = 3
    unknown_batch_polls: int = 3  # failed polls in a row, the last a 404, ...
    unknown_batch_seconds: float = 3600.0  # ... and this long since we began to follow it
    jitter: float = 0.1  # a delay d becomes d * (1 - jitter * u): polls of a cohort spread out
    webhook_poll_seconds: float = 3600.0  # the delay while webhooks flow (never shorter)

    def __post_init__(self) -> None:
        if self.backoff_factor < 1.0:
            raise ValueError(f"backoff_factor must be >= 1, got {self.backoff_factor!r}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")

    def _cap(self, status: BatchStatus | None) -> float:
        if status is BatchStatus.CANCELLING:
            return min(self.max_seconds, self.cancelling_max_seconds)
        return self.max_seconds

    def delay(self, status: BatchStatus | None, *, seconds_in_status: float, u: float) -> float:
        """Seconds until the next poll of a batch that answered normally."""
        _check_unit(u)
        grown = self.initial_seconds + (self.backoff_factor - 1.0) * max(0.0, seconds_in_status)
        return min(grown, self._cap(status)) * (1.0 - self.jitter * u)

    def error_delay(
        self,
        failures: int,
        *,
        status: BatchStatus | None = None,
        seconds_in_status: float = 0.0,
        retry_after: float | None = None,
        u: float,
    ) -> float:
        """Seconds until the next try after ``failures`` consecutive failures (>= 1)."""
        _check_unit(u)
        n = min(max(failures - 1, 0), 64)
        backoff = min(self.initial_seconds * 2.0 ** (n + 1), self.error_max_seconds)
        normal = self.delay(status, seconds_in_status=seconds_in_status, u=0.0)
        wait = max(backoff, normal) * (1.0 - self.jitter * u)
        if retry_after is not None and retry_after > wait:
            return retry_after  # the server knows its own load better than our backoff
        return wait

    def gives_up(
        self,
        status: BatchStatus | None,
        *,
        failures: int,
        not_found: bool,
        seconds_tracked: float,
    ) -> bool:
        """Stop polling? Only a batch the API has never shown us and still denies (404)
        after several failed polls over an hour: a mistyped id, or one this key cannot
        see. The hour lets a key or project mix-up be fixed before anything is let go;
        a batch seen before is never let go (a 404 for it is such a mix-up). Seeing the
        batch later (sync, a cancel's answer) or `orchestrator track` follows it again."""
        return (
            not_found
            and status is None
            and failures >= self.unknown_batch_polls
            and seconds_tracked >= self.unknown_batch_seconds
        )

    def overdue_at(
        self,
        status: BatchStatus | None,
        timestamps: Mapping[str, datetime | None],
        status_changed_at: datetime | None,
    ) -> datetime | None:
        """The moment a batch in this status becomes overdue (None: this status never is)."""
        if status is BatchStatus.CANCELLING:
            limit = self.overdue_cancelling_seconds
        elif status is BatchStatus.FINALIZING:
            limit = self.overdue_finalizing_seconds
        else:
            return None
        since = timestamps.get(status.timestamp_field) or status_changed_at
        if since is None:
            return None
        try:
            return since + timedelta(seconds=limit)
        except OverflowError:  # the server's time is within the limit of the year 9999
            return None

    def awaiting_file_ids(
        self,
        status: BatchStatus | None,
        *,
        output_file_id: str | None,
        error_file_id: str | None,
        terminal_polls: int,
    ) -> bool:
        """A terminal batch with no file id yet, polled no more than 1 + repolls times."""
        if status is None or not status.is_terminal:
            return False
        if output_file_id or error_file_id:
            return False
        return terminal_polls <= self.file_id_repolls


@dataclass(frozen=True)
class PolledBatch:
    """What the plan reads of a batch row, after the poll's observation was applied."""

    status: BatchStatus | None
    timestamps: Mapping[str, datetime | None]
    status_changed_at: datetime | None
    output_file_id: str | None
    error_file_id: str | None
    terminal_polls: int  # successful polls that saw it terminal, this one included
    overdue_since: datetime | None  # as stored before this poll


@dataclass(frozen=True)
class PollPlan:
    next_poll_at: datetime | None  # None: nothing more to poll
    overdue_since: datetime | None
    newly_overdue: bool
    no_longer_overdue: bool
    harvest: bool  # terminal with a file id: download now (the lease is kept for it)
    harvest_state: HarvestState


def plan_poll(
    policy: PollPolicy, batch: PolledBatch, *, now: datetime, u: float, webhooks: bool = False
) -> PollPlan:
    """Decide what follows a successful poll (``webhooks``: events are flowing)."""
    status = batch.status
    if status is not None and status.is_terminal:
        return _terminal_plan(policy, batch, now=now, u=u)
    changed = batch.status_changed_at or now
    delay = policy.delay(status, seconds_in_status=(now - changed).total_seconds(), u=u)
    if webhooks:
        delay = max(delay, policy.webhook_poll_seconds * (1.0 - policy.jitter * u))
    next_poll_at = now + timedelta(seconds=delay)
    overdue_at = policy.overdue_at(status, batch.timestamps, batch.status_changed_at)
    overdue_since: datetime | None = None
    if overdue_at is not None:
        if now >= overdue_at:
            overdue_since = batch.overdue_since or overdue_at
        else:
            # come back when it turns overdue, so the alert is not late by a whole delay
            next_poll_at = min(next_poll_at, overdue_at)
    return PollPlan(
        next_poll_at=next_poll_at,
        overdue_since=overdue_since,
        newly_overdue=overdue_since is not None and batch.overdue_since is None,
        no_longer_overdue=overdue_since is None and batch.overdue_since is not None,
        harvest=False,
        harvest_state=HarvestState.WAITING,
    )


def _terminal_plan(policy: PollPolicy, batch: PolledBatch, *, now: datetime, u: float) -> PollPlan:
    has_file = bool(batch.output_file_id or batch.error_file_id)
    awaiting = policy.awaiting_file_ids(
        batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        terminal_polls=batch.terminal_polls,
    )
    if has_file:
        # Due at once: if this process dies mid-download, whoever claims the batch
        # after the lease expires resumes from the checkpoint.
        next_poll_at: datetime | None = now
        state = HarvestState.PENDING
    elif awaiting:
        next_poll_at = now + timedelta(seconds=policy.initial_seconds * (1.0 - policy.jitter * u))
        state = HarvestState.PENDING
    else:
        next_poll_at = None
        state = HarvestState.DONE  # terminal without any file: no results, by the server's word
    return PollPlan(
        next_poll_at=next_poll_at,
        overdue_since=None,
        newly_overdue=False,
        no_longer_overdue=batch.overdue_since is not None,
        harvest=has_file,
        harvest_state=state,
    )
