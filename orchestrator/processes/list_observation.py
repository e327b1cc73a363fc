"""The reconcilers' list walk: observe many in-flight batches a page at a time.

``GET /v1/batches?limit=100`` returns full Batch objects, newest first, so one page
observes up to 100 batches for the price of one GET. With at least ``min_tracked``
in-flight batches tracked, as soon as one is due the reconcilers walk the list from
the top before their usual claims: every in-flight batch of ours on a page that no
other process holds is recorded, due or not yet (early is allowed: the poll policy
asks for at least so often), each page in one transaction (db/list_polls.py). The
walk goes on while batches due within ``HORIZON`` are left unobserved, so one walk
serves every batch falling due in the next minute, not one batch each. Whatever it
did not reach is still due, and the claims after it poll those with single GETs.

There is one walk, however many reconcilers (db/list_walks.py): they take turns to
fetch its next page (a turn lasts one GET) and record the pages they fetched side by
side, so each page is fetched once and the recording is split between them.

The walk stops where GETs cost less:
- fewer than ``min_tracked`` in-flight batches are tracked, or none is due now (it
  does not begin);
- nothing due within the horizon is left unobserved;
- the page reached is older than the oldest of those (newest first: it cannot come);
- two pages in a row observed fewer than ``list_walks.MIN_YIELD`` of ours (other systems'
  batches fill the list);
- the end of the list.
The order is not documented (reference section 6.2); if it is not newest first, only
the third rule is wrong, and it only ends the walk early: GETs do the rest.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.api.client import BatchApiClient
from orchestrator.clock import Clock
from orchestrator.core.observation import BatchObservation, MalformedBatch, parse_batch
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.list_polls import Due, ListPollStore
from orchestrator.db.list_walks import Busy, ListWalkStore, Next, Turn, WalkState
from orchestrator.db.poll_writes import PollRecord
from orchestrator.errors import ApiError, DatabaseError, InvalidBatchId

__all__ = ["LIST_PAGE", "ListObserver", "Walk"]

log = logging.getLogger(__name__)

LIST_PAGE = 100  # the API's largest page
HORIZON = timedelta(seconds=60)  # a walk also observes what falls due this soon
OVER = "the walk it took part in is over"
WHERE_ANOTHER_BEGINS = "where another segment begins"
SEGMENT_BATCHES = 400  # a long walk is cut into a segment per this many batches due, ...
CUT_FROM = 2000  # ... when at least this many are due (a shorter one takes a few seconds)
TURN_WAIT = 0.02  # seconds between looks at a turn another process holds (one GET long),
TURN_WAIT_MAX = 1.0  # doubling up to this while the holder's GET takes longer


@dataclass
class Walk:
    due: int = 0  # batches due when this process began a walk: polls the policy asked for
    # when the walk it took part in began, or with no walk needed, by when what it
    # left was due: the claims after it GET only what was due by then (None: all due)
    started: datetime | None = None
    pages: int = 0  # pages this process fetched and recorded
    records: list[PollRecord] = field(default_factory=list)
    waits: int = 0  # times it found another process fetching the next page
    stopped: str = ""  # why it stopped walking


class ListObserver:
    def __init__(
        self,
        client: BatchApiClient,
        store: ListPollStore,
        walks: ListWalkStore,
        *,
        clock: Clock,
        owner: str,
        policy: PollPolicy,
        lease_seconds: float,
        min_tracked: int,
        random_unit: Callable[[], float],
        webhooks: Callable[[], bool],
        on_page: Callable[[], bool] = lambda: True,
        pause: Callable[[float], bool] = lambda _seconds: True,
        concurrency: int = 1,
        segment_batches: int = SEGMENT_BATCHES,
        cut_from: int = CUT_FROM,
    ) -> None:
        self.client, self.store, self.walks = client, store, walks
        self.clock, self.owner = clock, owner
        self.policy, self.lease_seconds = policy, lease_seconds
        self.min_tracked, self.random_unit, self.webhooks = min_tracked, random_unit, webhooks
        self.on_page = on_page  # between pages: the loop is alive; False: stop walking
        self.pause = pause  # wait this long for the turn; False: stopping
        self.concurrency = max(1, concurrency)  # segments this process fetches at once
        self.segment_batches = segment_batches  # a segment per this many batches due, ...
        self.cut_from = cut_from  # ... if at least this many are

    def walk(self) -> Walk:
        """Take turns on the shared walk until it ends (or needs no walk). Once a walk
        of several segments is under way, ``concurrency - 1`` threads take turns on it
        too, until it ends; what they recorded is this walk's."""
        walk = Walk()
        helpers: list[tuple[threading.Thread, Walk, list[BaseException]]] = []
        try:
            self._walk(walk, None, helpers)
        finally:
            for thread, _, _ in helpers:
                thread.join()
        for _, helped, failed in helpers:
            if failed:
                raise failed[0]
            walk.pages += helped.pages
            walk.records.extend(helped.records)
            walk.waits += helped.waits
        return walk

    def _walk(
        self,
        walk: Walk,
        joined: datetime | None,
        helpers: list[tuple[threading.Thread, Walk, list[BaseException]]] | None,
    ) -> None:
        """Take turns until the walk ends. ``joined``: the walk begun then, the only one
        to take part in (a helper's from the start, the walk's own thread's from its
        first turn: neither begins another); ``helpers``: start them once there are
        several segments (the walk's own thread)."""
        busy = 0  # turns found taken in a row
        while self.on_page():
            now = self.clock.now()
            got = self.walks.take_turn(
                self.owner,
                now=now,
                lease_seconds=self.lease_seconds,
                horizon=HORIZON,
                decide=self._decide if joined is None else self._joining(joined),
                segment_batches=self.segment_batches,
                cut_from=self.cut_from,
            )
            if isinstance(got, Busy):  # others are fetching the next page of every segment
                walk.waits += 1
                busy += 1
                if not self.pause(min(TURN_WAIT_MAX, TURN_WAIT * 2 ** min(busy - 1, 10))):
                    break
                continue
            busy = 0
            if isinstance(got, tuple):  # the walk is over, or none is needed
                state, due, why = got
                if why != OVER or not walk.stopped:
                    walk.stopped = why
                if joined is not None:  # it ended: claims GET what it left
                    walk.started = joined if helpers is not None else None
                elif state.started_at is not None:  # it ended now
                    walk.started = state.started_at
                elif due.tracked >= max(1, self.min_tracked):
                    # none needed: GET only what the latest walk left, or with nothing
                    # due, nothing; what falls due after the count is the next walk's
                    # (unbounded, GETs took a cohort falling due meanwhile, one batch
                    # each, and the rest of it fell overdue while they did)
                    walk.started = state.last_started_at if due.now else now
                return
            if got.began:  # this process began it
                walk.due = got.due
            walk.started = joined = got.started_at
            several = got.segments > 1
            if helpers is not None and not helpers and several and self.concurrency > 1:
                helpers.extend(self._helpers(got.started_at))
            if not self._page(got, walk) and not several:
                return  # a walk of one segment: it is over
        walk.stopped = "the process is stopping"

    def _helpers(
        self, started_at: datetime
    ) -> list[tuple[threading.Thread, Walk, list[BaseException]]]:
        """Threads that take turns on the walk begun at ``started_at`` until it ends."""
        made = []
        for n in range(self.concurrency - 1):
            helped, failed = Walk(), list[BaseException]()

            def run(helped: Walk = helped, failed: list[BaseException] = failed) -> None:
                try:
                    self._walk(helped, started_at, None)
                except BaseException as exc:  # handed to the walk's own thread
                    failed.append(exc)

            thread = threading.Thread(target=run, name=f"list-walk-{n + 1}", daemon=True)
            thread.start()
            made.append((thread, helped, failed))
        return made

    def _decide(self, state: WalkState, due: Due) -> tuple[Next, str]:
        """Begin a walk, go on with a segment of the one in progress, or end it (see
        the rules above)."""
        if state.started_at is None:
            if due.tracked < max(1, self.min_tracked) or due.fresh == 0:
                return Next.NONE, (
                    f"{due.now} due of {due.tracked} in flight, {due.fresh} since the latest "
                    "walk began: no walk"
                )
            return Next.START, ""
        stop = _stop(due.soon, due.oldest, state.reached_at, state.lean)
        return (Next.END, stop) if stop else (Next.GO_ON, "")

    def _joining(self, started_at: datetime) -> Callable[[WalkState, Due], tuple[Next, str]]:
        """A helper's rule: the walk begun at ``started_at`` only, never a new one."""

        def decide(state: WalkState, due: Due) -> tuple[Next, str]:
            if state.started_at != started_at:
                return Next.NONE, OVER
            return self._decide(state, due)

        return decide

    def _page(self, turn: Turn, walk: Walk) -> bool:
        """Fetch the turn's page, pass the turn on, record the page; False: the segment
        (or the walk) ended. A walk of one segment passes the turn on before recording,
        so another reconciler fetches the next page meanwhile; a segment of several
        after (the others are fetched meanwhile): then the walk ends only once every
        page of it is recorded, and no reconciler polls with GETs, as left by the walk,
        batches of a page still being recorded."""
        started = self.clock.now()  # the page's GET begins: what a poll's `now` is
        try:
            page = self.client.list_page(turn.after_id, LIST_PAGE)
        except ApiError as exc:
            log.warning("listing batches failed (%s); single GETs do the rest", exc)
            walk.stopped = "the list failed"
            self.walks.finish_turn(
                self.owner, turn, after_id=None, reached_at=None, ended=walk.stopped
            )
            return False
        items, ended = _until(page.items, turn.stops)
        observed = _parsed(items)
        if ended is None and not page.next_after:
            ended = "the end of the list"

        def finish() -> None:
            self.walks.finish_turn(
                self.owner,
                turn,
                after_id=None if ended else page.next_after,
                reached_at=_created(observed),
                ended=ended,
            )

        if turn.segments == 1:
            finish()
        walk.pages += 1
        try:
            records = self.store.record_page(
                observed,
                now=started,
                owner=self.owner,
                policy=self.policy,
                lease_seconds=self.lease_seconds,
                u=self.random_unit,
                webhooks=self.webhooks(),
                walk_began=turn.started_at,
                then=self.walks.counting(turn),  # lean or not, with the page
            )
        except DatabaseError:
            raise  # the loop's to handle: back off, reconnect
        except Exception:  # a value no rule foresaw: not the process's end, nor a loop of it
            log.exception("recording a list page failed; single GETs do the rest")
            walk.stopped = "a page could not be recorded"
            return False
        finally:
            if turn.segments > 1:  # recorded or not: the segment is not left held
                finish()
        walk.records.extend(records)
        if ended:
            walk.stopped = ended
            return False
        return True


def _until(
    items: list[dict[str, Any]], stops: frozenset[str]
) -> tuple[list[dict[str, Any]], str | None]:
    """The page's batches down to where another segment begins, and why the segment
    ends there. That cut is this segment's last batch (the other begins after it). On
    a page newest first, what follows it is the other's; on a page out of order, the
    batches no older than the cut are kept, wherever they are (none of this segment's
    is lost; those created in the same second as the cut may be observed twice in the
    walk, which is harmless), and so is one whose age is not a number."""
    first = next((n for n, item in enumerate(items) if _id(item) in stops), None)
    if first is None:
        return items, None
    ages = [_age(item) for item in items]
    known = [age for age in ages if age is not None]
    if len(known) == len(ages) and all(a >= b for a, b in itertools.pairwise(known)):
        return items[: first + 1], WHERE_ANOTHER_BEGINS  # in order: cut at its place
    cut_ages = [age for age, item in zip(ages, items, strict=True) if _id(item) in stops]
    newest = max((age for age in cut_ages if age is not None), default=None)
    if newest is None:  # no age to compare: end at its place
        return items[: first + 1], WHERE_ANOTHER_BEGINS
    kept = [item for age, item in zip(ages, items, strict=True) if age is None or age >= newest]
    return kept, WHERE_ANOTHER_BEGINS


def _id(item: dict[str, Any]) -> str | None:
    """The item's id if it is text: an unparsed item's may be anything, a list unhashable."""
    value = item.get("id")
    return value if isinstance(value, str) else None


def _age(item: dict[str, Any]) -> int | None:
    created = item.get("created_at")
    return created if isinstance(created, int) and not isinstance(created, bool) else None


def _parsed(page: list[dict[str, Any]]) -> list[BatchObservation]:
    """The page's batches; one that does not parse is left to its own GET."""
    observed = []
    for item in page:
        try:
            observed.append(parse_batch(item))
        except (MalformedBatch, InvalidBatchId):
            continue
    return observed


def _created(observed: list[BatchObservation]) -> datetime | None:
    return observed[-1].timestamps.get("created_at") if observed else None


def _stop(soon: int, oldest: datetime | None, reached: datetime | None, lean: int) -> str:
    """Why the walk in progress should end now, or ""."""
    if soon == 0:
        return "nothing due soon is left"
    if oldest is not None and reached is not None and reached < oldest:
        return "past the oldest batch due"
    if lean >= 2:
        return "two lean pages"
    return ""
