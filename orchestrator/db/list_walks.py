"""The reconcilers' shared walk of the batch list: one row, whose turn and how far.

Every reconciler observing through list pages walks the same list, so they share
one walk: the ``list_walks`` row holds its cursor (the last id listed) and a turn, a
lease (db/leases.py's rule, on the database server's clock) held only while its
holder fetches the next page. With the page in hand the holder moves the cursor on
and gives the turn back at once, then records the page; meanwhile another reconciler
takes the turn and fetches the page after it. So each page is fetched once however
many reconcilers there are, and they record pages side by side.

Whether a walk begins, goes on or ends is decided by the caller's rule
(processes/list_observation.py), read and written here in one short transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator.db.leases import PROCESS_STALE_SECONDS, Leases
from orchestrator.db.list_polls import Due, ListPollStore
from orchestrator.db.models import ListWalk, table_of
from orchestrator.db.poll_writes import PollRecord

__all__ = ["Busy", "ListWalkStore", "Next", "Turn", "WalkState"]

WALK = "batches"
MIN_YIELD = 10  # a page observing fewer of ours costs more than a tenth of a GET each


@dataclass(frozen=True)
class WalkState:
    """The shared walk as it stands."""

    started_at: datetime | None  # the walk in progress began; None: none is
    pages: int
    lean: int  # pages in a row that observed few batches of ours
    reached_at: datetime | None  # created_at of the last batch listed so far
    last_started_at: datetime | None  # the latest walk began, in progress or not


class Next(StrEnum):
    """What the caller's rule makes of the walk's state."""

    START = "start"  # no walk in progress, and one is needed: begin at the top
    GO_ON = "go on"  # fetch the next page of the walk in progress
    END = "end"  # end the walk in progress (the reason goes with it)
    NONE = "none"  # no walk in progress, and none is needed


@dataclass(frozen=True)
class Turn:
    """This process's turn: fetch the page after ``after_id`` (None: the first)."""

    started_at: datetime  # the walk's own start: it names the walk
    after_id: str | None
    page: int  # pages fetched before this one
    due: int  # in-flight batches due when the turn was taken


@dataclass(frozen=True)
class Busy:
    """Another live process is fetching the walk's next page."""

    started_at: datetime | None


Decide = Callable[[WalkState, Due], tuple[Next, str]]


class ListWalkStore:
    def __init__(
        self, polls: ListPollStore, *, stale_seconds: float = PROCESS_STALE_SECONDS
    ) -> None:
        self.polls = polls
        self.db = db = polls.db
        self.leases = Leases(
            db, table_of(ListWalk), "name", source="reconciler", stale_seconds=stale_seconds
        )

    def take_turn(
        self,
        owner: str,
        *,
        now: datetime,
        lease_seconds: float,
        horizon: timedelta,
        decide: Decide,
    ) -> Turn | Busy | tuple[WalkState, Due, str]:
        """The turn to fetch the next page, if nobody holds it and ``decide`` says a walk
        begins or goes on; else Busy, or why there is nothing to fetch (the walk ended
        now, or none is needed). ``decide`` reads what is due (within ``horizon``) in
        the same transaction, under the walk's lock: two processes cannot both see the
        walk over and what it left due, and begin a walk each."""
        with self.db.transaction() as session:
            row, free = self._locked(session, now)
            if not free:
                return Busy(row.started_at)
            state = WalkState(
                row.started_at, row.pages, row.lean, row.reached_at, row.last_started_at
            )
            due = self.polls.due_in(
                session, now, horizon, walk_began=row.started_at, last_began=row.last_started_at
            )
            decision, why = decide(state, due)
            if decision is Next.NONE:
                return state, due, why
            if decision is Next.END:
                row.started_at, row.after_id, row.ended = None, None, why[:200]
                row.lease_owner, row.lease_expires_at = None, None
                return state, due, why
            if decision is Next.START:
                row.started_at, row.last_started_at = now, now
                row.after_id, row.pages, row.lean, row.reached_at, row.ended = (
                    None,
                    0,
                    0,
                    None,
                    None,
                )
            assert row.started_at is not None
            row.lease_owner = owner
            row.lease_expires_at = now + timedelta(seconds=lease_seconds)
            return Turn(row.started_at, row.after_id, row.pages, due.now)

    def finish_turn(
        self,
        owner: str,
        turn: Turn,
        *,
        after_id: str | None,
        reached_at: datetime | None,
        ended: str | None = None,
    ) -> bool:
        """The page after ``turn.after_id`` was fetched: the cursor moves to ``after_id``
        and the turn is free again; with ``ended``, the walk is over. False if the turn
        was no longer ours (taken over: someone else moved the cursor)."""
        values: dict[str, object] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "after_id": after_id,
            "pages": ListWalk.pages + 1,
        }
        if reached_at is not None:
            values["reached_at"] = reached_at
        if ended is not None:
            values.update(started_at=None, after_id=None, ended=ended[:200])
        with self.db.transaction() as session:
            result = session.execute(
                update(ListWalk)
                .where(
                    ListWalk.name == WALK,
                    ListWalk.lease_owner == owner,
                    ListWalk.started_at == turn.started_at,
                )
                .values(values)
            )
            return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def counting(self, turn: Turn) -> Callable[[Session, list[PollRecord]], None]:
        """What to write with the turn's page, in its transaction: whether it was lean
        (observed fewer than ``MIN_YIELD`` batches of ours)."""

        def count(session: Session, records: list[PollRecord]) -> None:
            lean = len(records) < MIN_YIELD
            session.execute(
                update(ListWalk)
                .where(ListWalk.name == WALK, ListWalk.started_at == turn.started_at)
                .values(lean=ListWalk.lean + 1 if lean else 0)
            )

        return count

    def state(self) -> WalkState | None:
        with self.db.transaction() as session:
            row = session.get(ListWalk, WALK)
            if row is None:
                return None
            return WalkState(
                row.started_at, row.pages, row.lean, row.reached_at, row.last_started_at
            )

    def _locked(self, session: Session, now: datetime) -> tuple[ListWalk, bool]:
        """The row, locked, and whether its turn is free at ``now``; the row is made on
        first use (several processes may start at once)."""
        query = (
            select(ListWalk, self.leases.free(now).label("free"))
            .where(ListWalk.name == WALK)
            .with_for_update(of=ListWalk)
        )
        found = session.execute(query).one_or_none()
        if found is None:
            session.execute(
                self.db.insert_ignoring_conflicts(table_of(ListWalk)),
                [{"name": WALK, "pages": 0, "lean": 0}],
            )
            found = session.execute(query).one()
        return found[0], bool(found[1])
