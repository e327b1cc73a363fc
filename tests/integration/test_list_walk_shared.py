"""Several reconcilers share one walk of the batch list: each page is fetched once.

The walk's cursor and the turn to fetch its next page live in the database
(db/list_walks.py). Two reconcilers observing 1,000 batches must send the list
requests of one walk between them, not one walk each, and split the pages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.observation import BatchObservation
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.list_polls import ListPollStore
from orchestrator.db.list_walks import ListWalkStore
from orchestrator.db.models import Batch
from orchestrator.db.poll_writes import PollRecord
from orchestrator.db.polls import PollStore
from orchestrator.processes.list_observation import ListObserver, Walk
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.secret import Secret
from orchestrator.simulator import Scenario, Simulator, SimulatorConfig, SimulatorServer

KEY = "sk-sim-shared-walk"
OURS = 1000  # ten pages of ours, newest first, above 40 batches of other systems


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def account(clock: ManualClock) -> tuple[Simulator, list[str]]:
    sim = Simulator(SimulatorConfig(api_key=KEY, seed=5), clock)
    for _ in range(40):
        sim.create_batch(2, Scenario(running_s=50_000))
    return sim, [sim.create_batch(2, Scenario(running_s=50_000)) for _ in range(OURS)]


@pytest.fixture
def server(account: tuple[Simulator, list[str]]) -> Iterator[SimulatorServer]:
    with SimulatorServer(account[0]) as running:
        yield running


def client(server: SimulatorServer, clock: ManualClock) -> BatchApiClient:
    return BatchApiClient(
        ApiSettings(api_key=Secret(KEY), base_url=server.url),
        policy=RetryPolicy(max_in_process_attempts=1),
        sleep=lambda _seconds: None,
        clock=clock,
    )


def observer(
    db: Database,
    api: BatchApiClient,
    clock: ManualClock,
    owner: str,
    *,
    store: ListPollStore | None = None,
    on_page: Callable[[], bool] = lambda: True,
) -> ListObserver:
    listed = store or ListPollStore(PollStore(db))
    return ListObserver(
        api,
        listed,
        ListWalkStore(listed),
        clock=clock,
        owner=owner,
        policy=PollPolicy(),
        lease_seconds=60,
        min_tracked=1,
        random_unit=lambda: 0.5,
        webhooks=lambda: False,
        on_page=on_page,
    )


def run_two_reconcilers(
    db: Database,
    server: SimulatorServer,
    clock: ManualClock,
    config: ReconcilerConfig,
    *,
    prepare: Callable[[Reconciler], None] = lambda _reconciler: None,
) -> list[int]:
    """One pass each of two reconcilers (own API clients) in two threads at once;
    the list pages each fetched."""
    apis = [client(server, clock), client(server, clock)]
    reconcilers = [
        Reconciler(db, api, config, clock, f"reconciler-{n}", random_unit=lambda: 0.5)
        for n, api in enumerate(apis)
    ]
    for reconciler in reconcilers:
        prepare(reconciler)
    pages = [0, 0]

    def run(n: int) -> None:
        pages[n] = reconcilers[n].run_once().list_pages

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for reconciler, api in zip(reconcilers, apis, strict=True):
        reconciler.close()
        api.close()
    return pages


def requests(sim: Simulator) -> dict[str, int]:
    totals: dict[str, int] = sim.counters()["requests_total"]
    return totals


def polls(db: Database, ids: list[str]) -> list[int]:
    with db.transaction() as session:
        return list(session.scalars(select(Batch.polls).where(Batch.id.in_(ids))))


def test_one_reconciler_walks_ten_pages_for_a_thousand_batches(
    database: Database, clock: ManualClock, account: tuple[Simulator, list[str]], server: Any
) -> None:
    sim, ours = account
    BatchStore(database).track(ours, now=clock.now(), source="track")
    api = client(server, clock)
    walk = observer(database, api, clock, "alone").walk()
    assert walk.pages == 10 and len(walk.records) == OURS
    assert walk.stopped == "nothing due soon is left"
    assert requests(sim) == {"list": 10}
    assert polls(database, ours) == [1] * OURS
    api.close()


class TakingTurns(ListPollStore):
    """A's store: before A records a page it fetched, B takes the next turn (fetches and
    records the page after it): the order two reconcilers side by side would take."""

    def __init__(self, polls: PollStore, other: Callable[[], Walk]) -> None:
        super().__init__(polls)
        self.other = other
        self.walks: list[Walk] = []

    def record_page(self, observed: Sequence[BatchObservation], **terms: Any) -> list[PollRecord]:
        self.walks.append(self.other())
        return super().record_page(observed, **terms)


def test_two_reconcilers_split_one_walk_and_fetch_each_page_once(
    database: Database, clock: ManualClock, account: tuple[Simulator, list[str]], server: Any
) -> None:
    sim, ours = account
    BatchStore(database).track(ours, now=clock.now(), source="track")
    api = client(server, clock)
    turns = [0]

    def one_turn() -> bool:  # B walks one page each time A lets it
        turns[0] -= 1
        return turns[0] >= 0

    b = observer(database, api, clock, "reconciler-b", on_page=one_turn)

    def b_takes_a_turn() -> Walk:
        turns[0] = 1
        return b.walk()

    store = TakingTurns(PollStore(database), b_takes_a_turn)
    a_walk = observer(database, api, clock, "reconciler-a", store=store).walk()
    b_pages = sum(w.pages for w in store.walks)
    # one walk's requests between them, each page fetched once, the pages split
    assert requests(sim) == {"list": 10}
    assert a_walk.pages + b_pages == 10
    assert a_walk.pages == 5 and b_pages == 5
    assert len(a_walk.records) + sum(len(w.records) for w in store.walks) == OURS
    assert polls(database, ours) == [1] * OURS  # every batch observed once, by one of them
    # and neither begins another walk: nothing is due
    assert b_takes_a_turn().pages == 0
    assert requests(sim) == {"list": 10}
    api.close()


@pytest.mark.postgres
def test_two_reconcilers_running_at_once_send_one_walks_requests(
    pg_url: str, clock: ManualClock, account: tuple[Simulator, list[str]], server: Any
) -> None:
    sim, ours = account
    db = Database.connect(pg_url, pool_size=8)
    BatchStore(db).track(ours, now=clock.now(), source="track")
    pages = run_two_reconcilers(
        db, server, clock, ReconcilerConfig(concurrency=2, list_min_tracked=1)
    )
    served = requests(sim)
    # Each page once; at most one more, listed while the page before it was between
    # its fetch and its record (its batches not yet leased, so still due).
    assert 10 <= served["list"] <= 11 and sum(pages) == served["list"]
    assert "retrieve" not in served  # nothing was left to single GETs
    assert polls(db, ours) == [1] * OURS
    db.dispose()


@pytest.mark.postgres
def test_two_reconcilers_walking_segments_at_once_leave_nothing_to_gets(
    pg_url: str, clock: ManualClock, account: tuple[Simulator, list[str]], server: Any
) -> None:
    """The walk cut into segments, two reconcilers of two threads each: a walk ends
    only once its pages are recorded, so neither polls with GETs, as left by the walk,
    the batches of a page the other is still recording."""
    sim, ours = account
    db = Database.connect(pg_url, pool_size=8)
    BatchStore(db).track(ours, now=clock.now(), source="track")

    def ten_segments(reconciler: Reconciler) -> None:
        reconciler.lister.segment_batches, reconciler.lister.cut_from = 100, 0

    config = ReconcilerConfig(concurrency=2, list_min_tracked=1, list_concurrency=2)
    pages = run_two_reconcilers(db, server, clock, config, prepare=ten_segments)
    served = requests(sim)
    assert "retrieve" not in served  # nothing was left to single GETs
    assert 10 <= served["list"] == sum(pages) <= 10 + 10 + 1
    assert polls(db, ours) == [1] * OURS
    db.dispose()


def test_what_a_walk_could_not_reach_is_left_to_gets_not_to_another_walk(
    database: Database, clock: ManualClock, account: tuple[Simulator, list[str]], server: Any
) -> None:
    sim, ours = account
    unlisted = "batch_" + "f" * 32  # tracked, but the list never returns it
    BatchStore(database).track([*ours, unlisted], now=clock.now(), source="track")
    api = client(server, clock)
    first = observer(database, api, clock, "reconciler-a").walk()
    # it looked for the unlisted batch to the end of the list
    assert first.pages == 11 and first.stopped == "the end of the list"
    listed = requests(sim)["list"]
    clock.advance(1)
    second = observer(database, api, clock, "reconciler-b").walk()
    # the other reconciler does not walk again for it: its GETs poll what was due
    # before the walk began (due_by), and only that
    assert second.pages == 0 and "no walk" in second.stopped
    assert second.started == first.started
    assert requests(sim)["list"] == listed
    api.close()


def test_with_nothing_due_no_walk_and_no_gets_for_what_falls_due_meanwhile(
    database: Database, clock: ManualClock, account: tuple[Simulator, list[str]], server: Any
) -> None:
    """A pass that finds nothing due needs no walk; what falls due between that count
    and its claims is the next walk's, not single GETs'. Unbounded, the claims polled
    every batch of a cohort falling due with GETs, one page after another, while the
    rest of the cohort fell overdue (bench.list_observation on SQLite)."""
    sim, ours = account
    BatchStore(database).track(ours, now=clock.now(), source="track")
    api = client(server, clock)
    config = ReconcilerConfig(concurrency=2, list_min_tracked=1)
    with Reconciler(database, api, config, clock, "alone", random_unit=lambda: 0.5) as r:
        assert r.run_once().list_pages == 10  # every batch observed, none due for a while
        walk = r.lister.walk
        decided: list[Walk] = []

        def then_all_fall_due() -> Walk:
            done = walk()
            decided.append(done)
            clock.advance(3600)  # the cohort falls due just after the count
            return done

        r.lister.walk = then_all_fall_due  # type: ignore[method-assign]
        clock.advance(1)
        before = requests(sim).get("retrieve", 0)
        r.run_once()
        assert decided[0].pages == 0 and "no walk" in decided[0].stopped
        assert requests(sim).get("retrieve", 0) == before  # left to the next walk
        r.lister.walk = walk  # type: ignore[method-assign]
        assert r.run_once().list_pages == 10  # which observes them a page at a time
    assert "retrieve" not in requests(sim)
    api.close()
