"""A long walk of the batch list is cut into segments fetched side by side.

Any listed batch's id is a cursor (``after=ID``), so a walk is cut at ids of batches
we track: the first segment from the top, each other one after its cut, each ending
where another begins (db/list_walks.py, processes/list_observation.py). Here the list
is a fake API whose pages can be hostile: segments must still observe every listed
batch, by the same recording path, and end, whatever the list does mid-walk.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from orchestrator.api.client import ApiResult, BatchApiClient
from orchestrator.api.errors import ApiCall, ApiProtocolError
from orchestrator.clock import ManualClock
from orchestrator.core.observation import BatchObservation
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.list_polls import ListPollStore
from orchestrator.db.list_walks import ListWalkStore
from orchestrator.db.models import Batch, BatchEvent, ListWalk
from orchestrator.db.poll_writes import PollRecord
from orchestrator.db.polls import PollStore
from orchestrator.processes.list_observation import ListObserver

OURS = 1000
OTHERS = 40  # other systems' batches, older than ours: the bottom of the list
CREATED = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def batch(n: int) -> dict[str, Any]:
    return {
        "id": f"batch_{n:032x}",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": f"file-{n}",
        "completion_window": "24h",
        "status": "in_progress",
        "created_at": int(CREATED.timestamp()) + n,
        "in_progress_at": int(CREATED.timestamp()) + n + 1,
    }


class FakeList(BatchApiClient):
    """``GET /v1/batches`` over a list held here, newest first; counts its requests.
    An ``after`` it does not list is refused (as the simulator and the API do)."""

    def __init__(self, listed: list[dict[str, Any]]) -> None:  # no HTTP at all
        self.listed = listed
        self.requests = 0
        self.lock = threading.Lock()
        self.hostile: Callable[[list[dict[str, Any]], str | None], dict[str, Any]] | None = None

    def list_batches(self, after: str | None = None, limit: int = 20) -> ApiResult:
        with self.lock:
            self.requests += 1
            ids = [b["id"] for b in self.listed]
            if after is not None and after not in ids:
                raise ApiProtocolError(
                    ApiCall("list", "GET", "/batches"), status=400, detail="no such batch"
                )
            start = 0 if after is None else ids.index(after) + 1
            page = [dict(b) for b in self.listed[start : start + limit]]
            data = {"object": "list", "data": page, "has_more": start + limit < len(ids)}
            if self.hostile is not None:
                data = self.hostile(page, after)
            return ApiResult(data, 200, None, 1)

    def close(self) -> None:
        pass


def account(extra: int = 0) -> tuple[FakeList, list[str]]:
    """OTHERS old batches of other systems, then OURS of ours; newest first."""
    listed = [batch(n) for n in range(OTHERS + OURS + extra)]
    ours = [b["id"] for b in listed[OTHERS : OTHERS + OURS]]
    return FakeList(list(reversed(listed))), ours


def observer(
    db: Database,
    api: BatchApiClient,
    clock: ManualClock,
    *,
    concurrency: int = 1,
    segment_batches: int = 100,
    on_page: Callable[[], bool] = lambda: True,
    store: ListPollStore | None = None,
) -> ListObserver:
    listed = store or ListPollStore(PollStore(db))
    return ListObserver(
        api,
        listed,
        ListWalkStore(listed),
        clock=clock,
        owner="lister",
        policy=PollPolicy(),
        lease_seconds=60,
        min_tracked=1,
        random_unit=lambda: 0.5,
        webhooks=lambda: False,
        on_page=on_page,
        concurrency=concurrency,
        segment_batches=segment_batches,
        cut_from=0,
    )


def polls(db: Database, ids: list[str]) -> dict[str, int]:
    with db.transaction() as session:
        return dict(session.execute(select(Batch.id, Batch.polls).where(Batch.id.in_(ids))).all())


def segment_rows(db: Database) -> dict[str, str | None]:
    """Each segment row of the walk, with the cursor it began at."""
    with db.transaction() as session:
        return dict(session.execute(select(ListWalk.name, ListWalk.start_id)).all())


def status_events(db: Database) -> int:
    with db.transaction() as session:
        kinds = session.scalars(select(BatchEvent.kind).where(BatchEvent.kind == "status"))
        return len(list(kinds))


def test_a_walk_in_segments_observes_each_batch_once(database: Database) -> None:
    clock = ManualClock()
    api, ours = account()
    BatchStore(database).track(ours, now=clock.now(), source="track")
    lister = observer(database, api, clock)
    walk = lister.walk()
    assert polls(database, ours) == dict.fromkeys(ours, 1)  # each exactly once: no overlap
    assert len(walk.records) == OURS and status_events(database) == OURS
    # ten segments (a cut per 100 due): at most one page more each than one walk's ten
    assert 10 <= walk.pages == api.requests <= 10 + 10
    assert lister.walks.segments() == []  # the walk is over
    state = lister.walks.state()
    assert state is not None and state.started_at is None and state.last_started_at is not None


def test_segments_fetched_side_by_side_by_threads(database: Database) -> None:
    clock = ManualClock()
    api, ours = account()
    BatchStore(database).track(ours, now=clock.now(), source="track")
    walk = observer(database, api, clock, concurrency=4).walk()
    assert polls(database, ours) == dict.fromkeys(ours, 1)
    assert len(walk.records) == OURS
    assert walk.pages == api.requests <= 10 + 10
    # and nothing was left for another walk: no batch is due
    assert observer(database, api, clock, concurrency=4).walk().pages == 0


def test_batches_created_and_a_cut_gone_from_the_list_mid_walk(database: Database) -> None:
    """New batches appear at the top while the walk goes on, and a batch we cut at
    leaves the list before its segment is fetched (a cursor the API refuses): the
    segment above it goes on to the next cut, so every batch still listed is
    observed; the one gone is left to its own GET."""
    clock = ManualClock()
    api, ours = account()
    BatchStore(database).track(ours, now=clock.now(), source="track")
    pages = [0]
    gone: list[str] = []

    def mid_walk() -> bool:
        pages[0] += 1
        if pages[0] == 2:  # after the first page: 30 newer batches, and one cut leaves
            with api.lock:
                api.listed[:0] = [batch(OTHERS + OURS + n) for n in range(30)]
                cuts = sorted(c for c in segment_rows(database).values() if c is not None)
                gone.append(cuts[len(cuts) // 2])
                api.listed[:] = [b for b in api.listed if b["id"] != gone[0]]
        return True

    lister = observer(database, api, clock, on_page=mid_walk)
    walk = lister.walk()
    seen = polls(database, ours)
    assert seen.pop(gone[0]) == 0  # it was not listed any more: single GETs poll it
    assert set(seen.values()) == {1}  # every other one once: the range was not lost
    assert len(walk.records) == OURS - 1
    # the new batches (not tracked) were never ours to record; at most one page more
    # than the walk without them, for the segment that failed
    assert walk.pages <= 10 + 10 + 1


def test_a_hostile_list_shuffled_repeated_and_never_ending(database: Database) -> None:
    """Pages whose ids are out of order and repeat a batch, and a list that never ends
    (past its last page it starts again from the top): every batch is observed, the
    repeats are recorded as the observations they are, and the walk ends on two lean
    pages (nothing new of ours), not never."""
    clock = ManualClock()
    api, ours = account()
    unlisted = "batch_" + "f" * 32  # tracked, due, never listed: the walk looks for it
    BatchStore(database).track([*ours, unlisted], now=clock.now(), source="track")
    shuffle = random.Random(7)
    top = api.listed[:100]

    def hostile(page: list[dict[str, Any]], after: str | None) -> dict[str, Any]:
        if not page:  # the end: start again, as if there were more
            page = [dict(b) for b in top]
        shuffled = page[:-1]  # the last stays last: it is the next page's cursor
        shuffle.shuffle(shuffled)
        shuffled.insert(len(shuffled) // 2, dict(shuffled[0]))  # a batch twice on one page
        shuffled.append(page[-1])
        return {"object": "list", "data": shuffled, "has_more": True}

    api.hostile = hostile
    walk = observer(database, api, clock, segment_batches=250).walk()
    seen = polls(database, [*ours, unlisted])
    assert seen.pop(unlisted) == 0
    assert min(seen.values()) >= 1  # every listed batch of ours, despite the order
    with database.transaction() as session:
        ended = set(session.scalars(select(ListWalk.ended)))
    assert "two lean pages" in ended  # the segment at the bottom, going round
    # four segments; the one that goes round ends two pages after it brings nothing new
    assert walk.pages == api.requests <= 10 + 4 + 2


class WatchingTheWalk(ListPollStore):
    """Before each page is recorded: is the walk still in progress?"""

    def __init__(self, polls: PollStore) -> None:
        super().__init__(polls)
        self.walks = ListWalkStore(self)
        self.in_progress: list[bool] = []

    def record_page(self, observed: Sequence[BatchObservation], **terms: Any) -> list[PollRecord]:
        state = self.walks.state()
        self.in_progress.append(state is not None and state.started_at is not None)
        return super().record_page(observed, **terms)


def test_a_walk_in_segments_ends_only_once_its_pages_are_recorded(database: Database) -> None:
    """Else another reconciler, finding the walk over, would poll with GETs (as left
    by the walk) the batches of a page still being recorded."""
    clock = ManualClock()
    api, ours = account()
    BatchStore(database).track(ours, now=clock.now(), source="track")
    store = WatchingTheWalk(PollStore(database))
    walk = observer(database, api, clock, store=store).walk()
    assert len(walk.records) == OURS
    assert store.in_progress == [True] * walk.pages
    state = store.walks.state()
    assert state is not None and state.started_at is None
