"""The reconcilers' shared walk of the batch list: its segments, whose turn, how far.

Every reconciler observing through list pages walks the same list, so they share
one walk. Any listed batch's id is a cursor, so a walk is cut into segments at ids
of batches we track: the first from the top of the list, each other one after its
cut, each ending where another begins. A segment is a ``list_walks`` row (the row
named ``batches`` is the walk itself and its first segment; ``batches/NN`` are the
others): its cursor (the last id listed) and its turn, a lease (db/leases.py's rule,
on the database server's clock) held only while its holder fetches the segment's
next page. With the page in hand the holder moves the cursor on and gives the turn
back at once, then records the page; meanwhile another reconciler (or another thread
of this one) takes a turn on this segment or another. So each page is fetched once
however many reconcilers there are, and segments are fetched side by side.

Whether a walk begins, whether a segment goes on or ends, is decided by the caller's
rule (processes/list_observation.py), read and written here in one short transaction
under the walk row's lock; the walk ends when its last segment does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.db.leases import PROCESS_STALE_SECONDS, Leases
from orchestrator.db.list_polls import Due, ListPollStore
from orchestrator.db.models import ListWalk, table_of

__all__ = ["MAX_SEGMENTS", "Busy", "ListWalkStore", "Next", "Turn", "WalkState"]

WALK = "batches"
MIN_YIELD = 10  # a page observing fewer of ours costs more than a tenth of a GET each
MAX_SEGMENTS = 32  # cuts of one walk: its rows, and the ids every page is checked against
PAGE_MOST = 100  # the API's largest page: the most batches one page can observe
DUE_REUSE = timedelta(seconds=1)  # a count of what is due serves the turns this long


@dataclass(frozen=True)
class WalkState:
    """The shared walk as it stands, or one of its segments."""

    started_at: datetime | None  # the walk in progress began; None: none is
    pages: int
    lean: int  # pages in a row that observed few batches of ours not yet observed
    reached_at: datetime | None  # created_at of the last batch listed so far
    last_started_at: datetime | None  # the latest walk began, in progress or not


class Next(StrEnum):
    """What the caller's rule makes of the walk's (or a segment's) state."""

    START = "start"  # no walk in progress, and one is needed: begin at the top
    GO_ON = "go on"  # fetch the segment's next page
    END = "end"  # end the segment (the reason goes with it); the last one ends the walk
    NONE = "none"  # take no turn (no walk is needed, or not this one)


@dataclass(frozen=True)
class Turn:
    """This process's turn: fetch the page after ``after_id`` (None: the first)."""

    started_at: datetime  # the walk's own start: it names the walk
    after_id: str | None
    page: int  # pages of this segment fetched before this one
    due: int  # in-flight batches due when the turn was taken
    segment: str = WALK  # the row of the segment
    stops: frozenset[str] = field(default_factory=frozenset)  # where other segments begin
    began: bool = False  # this turn began the walk
    segments: int = 1  # how many the walk has


@dataclass(frozen=True)
class Busy:
    """Other live processes are fetching the next page of every segment left."""

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
        # What was due when this process last counted, for the walk in progress: the
        # count reads every batch in flight, and a walk takes a turn per page.
        self._lock = threading.Lock()
        self._due: tuple[datetime | None, int, datetime, Due] | None = None

    def take_turn(
        self,
        owner: str,
        *,
        now: datetime,
        lease_seconds: float,
        horizon: timedelta,
        decide: Decide,
        segment_batches: int = 0,
        cut_from: int = 0,
    ) -> Turn | Busy | tuple[WalkState, Due, str]:
        """The turn to fetch a segment's next page, if one is free and ``decide`` says a
        walk begins or the segment goes on; else Busy, or why there is nothing to fetch
        (the walk ended now, or none is needed). ``decide`` reads what is due (within
        ``horizon``) in the same transaction, under the walk's lock: two processes cannot
        both see the walk over and what it left due, and begin a walk each. A walk that
        begins is cut into a segment per ``segment_batches`` batches due (0: one), if at
        least ``cut_from`` are."""
        with self.db.transaction() as session:
            head = self._locked(session)
            state = _state(head, head)
            rows = [] if head.started_at is None else self._rows(session, head.started_at, now)
            # pages of the walk fetched or being fetched: each observed up to PAGE_MOST
            pages = sum(r.pages + (0 if free else 1) for r, free in rows)
            due = self._reused(head.started_at, pages, now)
            if due is None:
                due = self.polls.due_in(
                    session,
                    now,
                    horizon,
                    walk_began=head.started_at,
                    last_began=head.last_started_at,
                )
                with self._lock:
                    self._due = (head.started_at, pages, now, due)
            if head.started_at is None:
                decision, why = decide(state, due)
                if decision is not Next.START:
                    return state, due, why
                cuts = self._begin(session, head, now, horizon, segment_batches, cut_from)
                self._lease(head, owner, now, lease_seconds)
                return Turn(now, None, 0, due.now, WALK, frozenset(cuts), True, 1 + len(cuts))
            stops = frozenset(r.start_id for r, _free in rows if r.start_id is not None)
            held, why = False, head.ended or ""
            for row, free in rows:
                if row.ended is not None:  # (the walk's own row, once its segment ended)
                    continue
                if not free:
                    held = True
                    continue
                decision, said = decide(_state(row, head), due)
                if decision is Next.NONE:
                    return state, due, said
                if decision is Next.END:
                    row.ended, why = said[:200], said
                    continue
                self._lease(row, owner, now, lease_seconds)
                assert row.started_at is not None
                return Turn(
                    row.started_at,
                    row.after_id,
                    row.pages,
                    due.now,
                    row.name,
                    stops - {row.start_id},
                    segments=len(rows),
                )
            if held:
                return Busy(head.started_at)
            _end(head, why or "every segment ended")
            return state, due, why

    def finish_turn(
        self,
        owner: str,
        turn: Turn,
        *,
        after_id: str | None,
        reached_at: datetime | None,
        ended: str | None = None,
    ) -> bool:
        """The page after ``turn.after_id`` was fetched: the segment's cursor moves to
        ``after_id`` and its turn is free again; with ``ended``, the segment is over (and
        the walk, if it was the last). False if the turn was no longer ours (taken over:
        someone else moved the cursor)."""
        values: dict[str, object] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "after_id": after_id,
            "pages": ListWalk.pages + 1,
        }
        if reached_at is not None:
            values["reached_at"] = reached_at
        if ended is not None:
            values.update(after_id=None, ended=ended[:200])
        with self.db.transaction() as session:
            # a walk ends under its lock, as it begins (and in that order: the walk's
            # row, then the segment's)
            head = self._locked(session) if ended is not None else None
            result = session.execute(
                update(ListWalk)
                .where(
                    ListWalk.name == turn.segment,
                    ListWalk.lease_owner == owner,
                    ListWalk.started_at == turn.started_at,
                )
                .values(values)
                .execution_options(synchronize_session=False)
            )
            if int(result.rowcount) != 1:  # type: ignore[attr-defined]
                return False
            if head is not None and ended is not None:
                session.refresh(head)
                left = session.scalar(
                    select(func.count()).where(_of_walk(turn.started_at), ListWalk.ended.is_(None))
                )
                if not left:
                    _end(head, ended)
            return True

    def counting(self, turn: Turn) -> Callable[[Session, int], None]:
        """What to write with the turn's page, in its transaction, given how many of its
        batches this walk had not observed yet: whether it was lean (fewer than
        ``MIN_YIELD``: a list of others' batches, or one that repeats itself)."""

        def count(session: Session, fresh: int) -> None:
            lean = fresh < MIN_YIELD
            session.execute(
                update(ListWalk)
                .where(ListWalk.name == turn.segment, ListWalk.started_at == turn.started_at)
                .values(lean=ListWalk.lean + 1 if lean else 0)
            )

        return count

    def _reused(self, walk: datetime | None, pages: int, now: datetime) -> Due | None:
        """What was due, counted at most ``DUE_REUSE`` ago in the same walk, if no page
        fetched since can have observed every batch it counted as due soon: a segment
        goes on then whatever the count is now. (A walk's start, its end, and whatever
        is decided near the end of what is due, read a fresh count.)"""
        with self._lock:
            if walk is None or self._due is None:
                return None
            began, counted_pages, at, due = self._due
        fresh = timedelta(0) <= now - at < DUE_REUSE
        observed_since = (pages - counted_pages + 1) * PAGE_MOST  # the next page too
        return due if began == walk and fresh and due.soon > observed_since else None

    def state(self) -> WalkState | None:
        with self.db.transaction() as session:
            row = session.get(ListWalk, WALK)
            return None if row is None else _state(row, row)

    def segments(self) -> list[WalkState]:
        """The segments of the walk in progress (the walk's own row first)."""
        with self.db.transaction() as session:
            head = session.get(ListWalk, WALK)
            if head is None or head.started_at is None:
                return []
            rows = session.scalars(
                select(ListWalk).where(_of_walk(head.started_at)).order_by(ListWalk.name)
            )
            return [_state(row, head) for row in rows]

    def _begin(
        self,
        session: Session,
        head: ListWalk,
        now: datetime,
        horizon: timedelta,
        segment_batches: int,
        cut_from: int,
    ) -> list[str]:
        """Begin a walk at ``now``, its segments cut at batches due: their cursors."""
        head.started_at, head.last_started_at = now, now
        head.after_id, head.pages, head.lean, head.reached_at = None, 0, 0, None
        head.ended, head.start_id = None, None
        session.execute(
            delete(ListWalk)
            .where(ListWalk.name.like(f"{WALK}/%"))
            .execution_options(synchronize_session=False)
        )
        if segment_batches <= 0:
            return []
        cuts = self.polls.cuts_in(
            session, now, horizon, every=segment_batches, least=cut_from, most=MAX_SEGMENTS
        )
        self.db.insert_rows(
            session,
            table_of(ListWalk),
            [
                {
                    "name": f"{WALK}/{n:02d}",
                    "started_at": now,
                    "after_id": cut,
                    "start_id": cut,
                    "pages": 0,
                    "lean": 0,
                }
                for n, cut in enumerate(cuts, start=1)
            ],
        )
        return cuts

    def _rows(
        self, session: Session, started_at: datetime, now: datetime
    ) -> list[tuple[ListWalk, bool]]:
        """The walk's segments (its own row first), each with whether its turn is free."""
        found = session.execute(
            select(ListWalk, self.leases.free(now).label("free"))
            .where(_of_walk(started_at))
            .order_by(ListWalk.name)
        ).all()
        return [(row, bool(free)) for row, free in found]

    @staticmethod
    def _lease(row: ListWalk, owner: str, now: datetime, lease_seconds: float) -> None:
        row.lease_owner = owner
        row.lease_expires_at = now + timedelta(seconds=lease_seconds)

    def _locked(self, session: Session) -> ListWalk:
        """The walk's row, locked; made on first use (several processes may start at once)."""
        query = select(ListWalk).where(ListWalk.name == WALK).with_for_update()
        found = session.scalars(query).one_or_none()
        if found is None:
            session.execute(
                self.db.insert_ignoring_conflicts(table_of(ListWalk)),
                [{"name": WALK, "pages": 0, "lean": 0}],
            )
            found = session.scalars(query).one()
        return found


def _of_walk(started_at: datetime) -> ColumnElement[bool]:
    """The rows of the walk begun at ``started_at``: its own and its segments'."""
    return (ListWalk.started_at == started_at) & or_(
        ListWalk.name == WALK, ListWalk.name.like(f"{WALK}/%")
    )


def _state(row: ListWalk, head: ListWalk) -> WalkState:
    return WalkState(row.started_at, row.pages, row.lean, row.reached_at, head.last_started_at)


def _end(head: ListWalk, why: str) -> None:
    head.started_at, head.after_id, head.ended = None, None, why[:200]
    head.lease_owner, head.lease_expires_at = None, None
