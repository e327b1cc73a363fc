"""The reconciler's bookkeeping on ``batches``: leases, polls, poll failures, harvest ends.

A batch is claimable when it is due (``next_poll_at <= now``) and its lease is free
by the one rule of ``orchestrator.db.leases``. Every write that ends a piece of work
checks the lease is still ours before it moves ``next_poll_at`` or the lease, so a
process that lost its lease (paused past expiry) cannot undo what the new holder
decided.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select

from orchestrator.core.harvest import FileState, HarvestState
from orchestrator.core.observation import BatchObservation
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.core.status import TERMINAL, BatchStatus, parse_status
from orchestrator.db.batches import event_row, event_values, unrepeated
from orchestrator.db.database import Database
from orchestrator.db.harvest_end import ERROR_CHARS, SOURCE, settle_harvest
from orchestrator.db.leases import PROCESS_STALE_SECONDS, Leases
from orchestrator.db.models import Batch, BatchEvent, ResultFile, table_of
from orchestrator.db.poll_writes import PollRecord, PollTerms, record_polled

__all__ = [
    "Attention",
    "Claim",
    "HarvestRecord",
    "PollRecord",
    "PollStore",
    "PollTerms",
    "in_flight",
    "in_flight_filter",
]

log = logging.getLogger(__name__)


IN_FLIGHT = [s.value for s in BatchStatus if s not in TERMINAL]


def in_flight() -> ColumnElement[bool]:
    """Tracked, still polled, and not ended (or not seen yet)."""
    return Batch.next_poll_at.is_not(None) & or_(
        Batch.status.is_(None), Batch.status.in_(IN_FLIGHT)
    )


def in_flight_filter() -> ColumnElement[bool]:
    """``in_flight`` as a filter of rows found another way (a page's batches by id, the
    due ones by ``next_poll_at``). The status is compared as an expression (``status ||
    ''``) so that PostgreSQL cannot drive the lookup from the status index: after a bulk
    of batches is tracked or first observed, its statistics still say "status unknown"
    for most rows, the status index looks selective, and a page's ids were then checked
    against every row (40 ms a page at 10,000 batches instead of 5 ms)."""
    return Batch.next_poll_at.is_not(None) & or_(
        Batch.status.is_(None), Batch.status.concat("").in_(IN_FLIGHT)
    )


# What a claim of the batch does first is a GET: in flight, or ended with no file id
# known yet (waiting for it); not a download.
_A_POLL = in_flight_filter() | (Batch.output_file_id.is_(None) & Batch.error_file_id.is_(None))


def _status(row: Batch) -> BatchStatus | None:
    return parse_status(row.status) if row.status else None


@dataclass(frozen=True)
class Claim:
    """A leased batch as it stood when claimed."""

    batch_id: str
    status: BatchStatus | None
    output_file_id: str | None
    error_file_id: str | None
    terminal_polls: int
    harvest_state: str

    @property
    def file_ids(self) -> list[tuple[str, str]]:
        """(kind, file id) of each known file."""
        pairs = (("output", self.output_file_id), ("error", self.error_file_id))
        return [(kind, file_id) for kind, file_id in pairs if file_id]


@dataclass(frozen=True)
class HarvestRecord:
    batch_id: str
    state: HarvestState
    results_stored: int
    line_errors: int


@dataclass(frozen=True)
class Attention:
    """What needs a person, across every batch we track."""

    overdue: list[tuple[str, str, datetime]]  # batch id, status, overdue since
    files: list[tuple[str, str, str, str]]  # batch id, file id, state, last error


class PollStore:
    def __init__(self, db: Database, *, stale_seconds: float = PROCESS_STALE_SECONDS) -> None:
        self.db = db
        self.leases = Leases(db, table_of(Batch), "id", source=SOURCE, stale_seconds=stale_seconds)

    # --- leases -----------------------------------------------------------------

    def claim_due(
        self,
        *,
        now: datetime,
        owner: str,
        lease_seconds: float,
        limit: int,
        due_by: datetime | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` batches due (by ``due_by``, else ``now``): the polls
        first (batches in flight, and ended ones still waiting for their file ids), then
        any, harvests included; each earliest due first (see db/leases.py).

        Polls first: a poll is a GET, a harvest may be a long download, and under a
        backlog of harvests that fell due earlier, batches in flight went unpolled for
        minutes. One of every ``limit`` (more than one) is left to the earliest due of
        any kind, so that harvests go on even when polls alone would fill every claim
        (more batches in flight than GETs can keep up with)."""
        due = Batch.next_poll_at <= (due_by or now)
        polls = limit - 1 if limit > 1 else limit
        with self.db.transaction() as session:
            claimed: list[Sequence[object]] = []
            for which, most in ((due & _A_POLL, polls), (due, limit)):
                if len(claimed) < most:
                    claimed += self.leases.claim(
                        session,
                        owner,
                        now=now,
                        lease_seconds=lease_seconds,
                        due=which,
                        order_by=[Batch.next_poll_at, Batch.id],
                        limit=most - len(claimed),
                    )
            # A row is not leased twice (the second claim sees the first's leases), but
            # should our own process ever count as dead, it would be: once is enough.
            ids = list(dict.fromkeys(str(row[0]) for row in claimed))
            if not ids:
                return []
            rows = session.scalars(select(Batch).where(Batch.id.in_(ids))).all()
            by_id = {row.id: row for row in rows}
            return [
                Claim(
                    batch_id=batch_id,
                    status=_status(by_id[batch_id]),
                    output_file_id=by_id[batch_id].output_file_id,
                    error_file_id=by_id[batch_id].error_file_id,
                    terminal_polls=by_id[batch_id].terminal_polls,
                    harvest_state=by_id[batch_id].harvest_state,
                )
                for batch_id in ids
            ]

    def release(self, batch_ids: list[str], *, owner: str) -> int:
        """Give leases back untouched (the batches stay due): for work never started."""
        return self.leases.release(owner, batch_ids)

    def release_due(self, batch_ids: list[str], *, owner: str, due_at: datetime) -> int:
        """Give leases back, the batches due at ``due_at``: for work left to the claims."""
        return self.leases.release(owner, batch_ids, next_poll_at=due_at)

    def release_owned(self, *, owner: str) -> int:
        """Give back every lease this owner holds (after an outage cut its work short)."""
        return self.leases.release_all(owner)

    # --- polls ------------------------------------------------------------------

    def record_poll(
        self,
        observed: BatchObservation,
        *,
        now: datetime,
        owner: str,
        policy: PollPolicy,
        lease_seconds: float,
        u: float,
        webhooks: bool = False,
    ) -> PollRecord | None:
        """Apply what the server said and schedule what follows, in one transaction.

        ``now`` is when the poll's GET began. A webhook for this batch recorded since
        then may tell of a change the GET was too early to see: the batch stays due
        at once instead of waiting out the delay (``webhooks``: they are flowing).

        None, and nothing written, if the batch's row is gone: it was forgotten while
        the GET was in flight (a poll never creates a row, see ``record_polled``)."""
        with self.db.transaction() as session:
            terms = PollTerms(now, owner, policy, lease_seconds, webhooks)
            records = record_polled(self.db, session, {observed.id: observed}, terms, lambda: u)
        if not records:
            log.info(
                "forgotten while its poll was in flight: the answer is dropped",
                extra={"batch_id": observed.id, "action": "poll_dropped"},
            )
            return None
        [record] = records
        return record

    def record_failure(
        self,
        batch_id: str,
        *,
        now: datetime,
        owner: str,
        error: str,
        policy: PollPolicy,
        u: float,
        retry_after: float | None = None,
        not_found: bool = False,
        event: str | None = None,
    ) -> bool:
        """A poll (or harvest) that failed. Never fails the batch: records the error,
        backs off, gives the lease back; or, for a batch the API has never shown us and
        keeps answering 404 for, stops polling it. Returns whether it stopped. With
        ``event``, an event of that kind records the error (once: see ``unrepeated``).

        Only while ``owner`` holds the lease: a failure that comes back after the lease
        was taken over (a poll that hung past it) is not the live owner's, whose
        backoff and give-up the count decides, and its error is older than the live
        owner's polls. Its ``event`` is recorded all the same: what the server said."""
        with self.db.transaction() as session:
            row = session.get(Batch, batch_id, with_for_update=True)
            if row is None:
                return False
            said = error[:ERROR_CHARS]
            if event is not None:  # something a person should see (an anomaly), once
                events = [event_values(row.id, event, now, SOURCE, detail=said)]
                self.db.insert_rows(session, table_of(BatchEvent), unrepeated(session, events))
            if row.lease_owner != owner:
                return False
            failures = row.poll_failures + 1
            row.poll_failures = failures
            row.last_error = said
            row.last_polled_at = now
            if event is None and failures == 1:
                session.add(event_row(row.id, "poll_failed", now, SOURCE, detail=said))
            status = _status(row)
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            tracked = (now - row.tracked_at).total_seconds()
            if policy.gives_up(
                status, failures=failures, not_found=not_found, seconds_tracked=tracked
            ):
                row.next_poll_at = None  # claim_due never picks it again
                detail = (
                    f"stopped polling after {failures} failed polls, the last a 404 "
                    f"(`orchestrator track {row.id}` resumes): {row.last_error}"
                )
                session.add(event_row(row.id, "poll_stopped", now, SOURCE, detail=detail))
                return True
            changed = row.status_changed_at or now
            delay = policy.error_delay(
                failures,
                status=status,
                seconds_in_status=(now - changed).total_seconds(),
                retry_after=retry_after,
                u=u,
            )
            row.next_poll_at = now + timedelta(seconds=delay)
            return False

    # --- the end of a harvest ---------------------------------------------------------

    def finish_harvest(
        self, batch_id: str, *, now: datetime, owner: str, policy: PollPolicy, u: float
    ) -> HarvestRecord | None:
        """Settle the batch's harvest state from its files; None if the lease was lost."""
        with self.db.transaction() as session:
            row = session.get(Batch, batch_id, with_for_update=True)
            if row is None or row.lease_owner != owner:
                return None
            state = settle_harvest(session, row, now, policy, u)
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            return HarvestRecord(batch_id, state, row.results_stored, row.result_line_errors)

    def backlog(self, now: datetime) -> tuple[int, int]:
        """(due now, still followed): batches whose poll or harvest is due, and every
        batch with a next poll at all (not yet terminal and harvested)."""
        with self.db.transaction() as session:
            due, followed = session.execute(
                select(
                    func.count().filter(Batch.next_poll_at <= now),
                    func.count(Batch.next_poll_at),
                ).where(Batch.next_poll_at.is_not(None))
            ).one()
            return int(due), int(followed)

    # --- what needs a person --------------------------------------------------------------

    def attention(self) -> Attention:
        with self.db.transaction() as session:
            overdue = session.execute(
                select(Batch.id, Batch.status, Batch.overdue_since)
                .where(Batch.overdue_since.is_not(None))
                .order_by(Batch.overdue_since)
            ).all()
            files = session.execute(
                select(ResultFile.batch_id, ResultFile.file_id, ResultFile.state, Batch.last_error)
                .join(Batch, Batch.id == ResultFile.batch_id)
                .where(
                    or_(
                        ResultFile.state == FileState.MISSING.value,
                        Batch.harvest_state == HarvestState.RETRYING.value,
                    ),
                    ResultFile.state != FileState.DONE.value,
                )
                .order_by(ResultFile.batch_id, ResultFile.file_id)
            ).all()
            return Attention(
                overdue=[(i, s or "?", t) for i, s, t in overdue if t is not None],
                files=[(b, f, s, e or "") for b, f, s, e in files],
            )
