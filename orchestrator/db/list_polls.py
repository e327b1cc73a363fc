"""Observing batches a list page at a time: what is due, and one page in one transaction.

``GET /v1/batches`` returns full Batch objects, so each one on a page is the same
observation a single GET would have brought. The page's in-flight batches that we
track and nobody else holds are leased (the one rule of db/leases.py), then recorded
by ``poll_writes.record_polled``, the code that records a GET's answer: the state
machine, the events, the next poll, exactly as GETs would, in one transaction of a
few statements.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from orchestrator.core.observation import BatchObservation
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.database import chunks
from orchestrator.db.models import Batch
from orchestrator.db.poll_writes import (
    POLL_COLUMNS,
    PolledRow,
    PollRecord,
    PollTerms,
    record_polled,
)
from orchestrator.db.polls import PollStore, in_flight, in_flight_filter

__all__ = ["Due", "ListPollStore"]


@dataclass(frozen=True)
class Due:
    """What a list walk is for, among in-flight batches no other process holds."""

    tracked: int  # all of them
    now: int  # due now
    soon: int  # due within the horizon and not observed by the walk in progress: worth
    # observing early while the walk passes by
    oldest: datetime | None  # the oldest creation time among those due soon, if known:
    # the list is newest first, so a walk past it cannot meet them any more
    fresh: int = 0  # due now, and fell due after the latest walk began: what a new walk
    # is for (those due before it, it could not reach: single GETs poll them)


class ListPollStore:
    def __init__(self, polls: PollStore) -> None:
        self.polls = polls
        self.db = polls.db

    def due(self, now: datetime, horizon: timedelta) -> Due:
        with self.db.transaction() as session:
            return self.due_in(session, now, horizon)

    def due_in(
        self,
        session: Session,
        now: datetime,
        horizon: timedelta,
        *,
        walk_began: datetime | None = None,
        last_began: datetime | None = None,
    ) -> Due:
        """``due`` in the caller's transaction (the shared walk decides under its lock).
        ``walk_began``: the walk in progress began then; what it observed already is not
        "left" for it, even if its next poll is soon. ``last_began``: the latest walk
        began then (``fresh`` counts what fell due after it)."""
        due_now = Batch.next_poll_at <= now
        soon = Batch.next_poll_at <= now + horizon
        if walk_began is not None:
            soon &= or_(Batch.last_polled_at.is_(None), Batch.last_polled_at < walk_began)
        fresh = due_now if last_began is None else due_now & (Batch.next_poll_at > last_began)
        tracked, due, due_soon, oldest, new = session.execute(
            select(
                func.count(),
                func.count().filter(due_now),
                func.count().filter(soon),
                func.min(Batch.created_at).filter(soon),
                func.count().filter(fresh),
            ).where(in_flight(), self.polls.leases.free(now))
        ).one()
        return Due(int(tracked), int(due), int(due_soon), oldest, int(new))

    def cuts_in(
        self,
        session: Session,
        now: datetime,
        horizon: timedelta,
        *,
        every: int,
        least: int,
        most: int,
    ) -> list[str]:
        """Where to cut a walk of the list into segments of about ``every`` batches due
        within ``horizon`` (no cut if fewer than ``least`` are; at most ``most`` cuts):
        ids of such batches, by what we know of their creation, newest first (never
        seen: last, in id order; the list's order of those is unknown, so their cuts
        fall at random places in it). Returned most urgent first: by the earliest poll
        due among the batches after each cut, down to the next."""
        rows = session.execute(
            select(Batch.id, Batch.next_poll_at)
            .where(in_flight(), Batch.next_poll_at <= now + horizon, self.polls.leases.free(now))
            .order_by(Batch.created_at.desc().nulls_last(), Batch.id)
        ).all()
        if len(rows) < least:
            return []
        segments = min(most + 1, len(rows) // max(1, every))
        bounds = [n * len(rows) // segments for n in range(1, segments)] + [len(rows)]
        # the segment after the cut at bounds[k] holds the batches down to bounds[k + 1]
        urgency: dict[str, datetime] = {}
        for start, stop in itertools.pairwise(bounds):
            due = [at for _id, at in rows[start + 1 : stop + 1] if at is not None]
            if due:
                urgency[str(rows[start][0])] = min(due)
        return sorted(urgency, key=urgency.__getitem__)

    def record_page(
        self,
        observed: Sequence[BatchObservation],
        *,
        now: datetime,
        owner: str,
        policy: PollPolicy,
        lease_seconds: float,
        u: Callable[[], float],
        webhooks: bool = False,
        walk_began: datetime | None = None,
        then: Callable[[Session, int], None] | None = None,
    ) -> list[PollRecord]:
        """Record every in-flight batch of ours on the page that no one else holds, in
        one transaction; batches we do not track, or that have ended, are left alone.
        ``then``: more to write in the same transaction, given how many of the batches
        recorded had not been observed since ``walk_began`` (the walk's own start)."""
        by_id = {o.id: o for o in observed}  # a batch listed twice: the later one wins
        if not by_id and then is None:
            return []
        with self.db.transaction() as session:
            # Lock and read the page's batches that are ours, in flight and free, in one
            # statement; their leases are written with what the observations decide.
            locked = [  # a statement's worth of ids at a time: a page may be any length
                row
                for ids in chunks(sorted(by_id))
                for row in self.polls.leases.lock(
                    session,
                    owner,
                    now=now,
                    due=Batch.id.in_(ids) & in_flight_filter(),
                    order_by=[Batch.id],  # lock in id order, as every other writer does
                    columns=(*POLL_COLUMNS, Batch.last_polled_at),
                )
            ]
            rows = [PolledRow.of(row, holder=owner) for row in locked]
            fresh = sum(
                1
                for row in locked
                if walk_began is None
                or row.last_polled_at is None
                or row.last_polled_at < walk_began
            )
            terms = PollTerms(now, owner, policy, lease_seconds, webhooks)
            records = record_polled(
                self.db, session, {r.batch.id: by_id[r.batch.id] for r in rows}, terms, u, rows
            )
            if then is not None:
                then(session, fresh)
            return records
