"""One long harvest does not hold back the polls due behind it."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from orchestrator.api.client import ApiResult, Download
from orchestrator.clock import ManualClock
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from orchestrator.db.polls import Claim, PollStore
from orchestrator.processes.pass_summary import PassSummary
from orchestrator.simulator import Scenario

from .conftest import ReconcilerFactory, Sim, track

WAIT = 30.0  # a bound on waiting for a thread, never a pause: each wait ends on an event


def test_a_long_harvest_leaves_the_other_threads_claiming_and_polling(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    ended = sim.simulator.create_batch(10, Scenario(body_bytes=50), cancel_after_s=1)
    clock.advance(100)  # cancelled, with its files: its claim goes on to a harvest
    running = [sim.simulator.create_batch(10, Scenario(running_s=1e6)) for _ in range(3)]
    track(database, clock, ended)
    clock.advance(1)
    track(database, clock, *running)  # due after `ended`: claimed with it or after it

    # Two threads, claims two at a time: `ended` and one running batch first.
    r = reconciler(concurrency=2, page_size=2)
    in_download, release = threading.Event(), threading.Event()
    polled_last, last = threading.Event(), max(running)
    retrieve, download = r.client.retrieve, r.client.download

    @contextmanager
    def slow_download(file_id: str) -> Iterator[Download]:
        in_download.set()
        release.wait(WAIT)  # the long harvest: until the test lets it go
        with download(file_id) as stream:
            yield stream

    def watched_retrieve(batch_id: str) -> ApiResult:
        answer = retrieve(batch_id)
        if batch_id == last:
            polled_last.set()
        return answer

    r.client.download = slow_download  # type: ignore[method-assign]
    r.client.retrieve = watched_retrieve  # type: ignore[method-assign]
    outcome: list[PassSummary] = []
    one_pass = threading.Thread(target=lambda: outcome.append(r.run_once()))
    one_pass.start()
    try:
        assert in_download.wait(WAIT)
        # Before: the pass claimed no more until its whole first page was done, so
        # the last running batch waited for the harvest.
        assert polled_last.wait(WAIT), "the harvest held back a poll due behind it"
        assert not release.is_set()
    finally:
        release.set()
        one_pass.join(WAIT)
    assert not one_pass.is_alive()
    assert outcome[0].claimed == 4
    assert outcome[0].harvested == 1
    assert outcome[0].polled == 4


def test_a_free_thread_takes_a_few_claims_not_the_rest_of_a_page(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    """Claims taken while a thread is in a long harvest wait behind the free thread, their
    leases running: no more than a page's share of a thread is claimed for it."""
    ended = sim.simulator.create_batch(10, Scenario(body_bytes=50), cancel_after_s=1)
    clock.advance(100)
    running = [sim.simulator.create_batch(10, Scenario(running_s=1e6)) for _ in range(9)]
    track(database, clock, ended)
    clock.advance(1)
    track(database, clock, *running)

    r = reconciler(concurrency=2, page_size=6)  # three claims a thread
    in_download, release = threading.Event(), threading.Event()
    download, claim_due = r.client.download, r.polls.claim_due
    taken: list[tuple[bool, int]] = []  # (the harvest was under way, claims taken)

    @contextmanager
    def slow_download(file_id: str) -> Iterator[Download]:
        in_download.set()
        release.wait(WAIT)
        with download(file_id) as stream:
            yield stream

    def counted_claim(**kwargs: Any) -> list[Claim]:
        claims = claim_due(**kwargs)
        taken.append((in_download.is_set(), len(claims)))
        if len(taken) > 1 and sum(n for _, n in taken) == 10:
            release.set()  # every batch claimed: let the harvest end
        return claims

    r.client.download = slow_download  # type: ignore[method-assign]
    r.polls.claim_due = counted_claim  # type: ignore[method-assign]
    try:
        summary = r.run_once()
    finally:
        release.set()
    assert summary.claimed == 10 and summary.polled == 10
    assert taken[0] == (False, 6)  # the first page
    # Before: the pass claimed what the page had room for (5), all waiting behind the
    # one free thread.
    during = [n for harvesting, n in taken[1:] if harvesting and n]
    assert during and max(during) <= 3


def test_a_batch_due_again_within_the_pass_does_not_end_it_early(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    first, second = (sim.simulator.create_batch(10, Scenario(running_s=1e6)) for _ in range(2))
    track(database, clock, first)
    clock.advance(1)
    track(database, clock, second)

    r = reconciler(concurrency=1, page_size=1)
    process = r._process

    def due_again_at_once(claim: Claim, summary: PassSummary) -> None:
        process(claim, summary)
        with database.transaction() as session:  # as a webhook flowing would leave it
            session.execute(
                update(Batch)
                .where(Batch.id == claim.batch_id)
                .values(next_poll_at=clock.now() - timedelta(seconds=1))
            )

    r._process = due_again_at_once  # type: ignore[method-assign]
    summary = r.run_once()
    # Before: the claim after the first poll found only the first batch again, and the
    # pass ended with the second still due.
    assert summary.polled == 2 and summary.claimed == 2
    with database.transaction() as session:
        leases = session.scalars(select(Batch.lease_owner).where(Batch.lease_owner.is_not(None)))
        assert leases.all() == []  # the batch due again was given back at the pass's end


def test_a_walk_that_finds_many_ended_leases_a_page_of_harvests_not_all(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    """The harvests a list walk finds beyond a page are given back, due since the walk
    began, and the pass's claims take them in turn: every one is harvested in the pass,
    and no more than a page hold leases at once (queued behind the others, their leases
    used to run out)."""
    ended = [
        sim.simulator.create_batch(5, Scenario(body_bytes=20), cancel_after_s=1) for _ in range(6)
    ]
    clock.advance(100)
    track(database, clock, *ended)

    r = reconciler(concurrency=1, page_size=2, list_min_tracked=1)
    harvest = r._harvest
    leased: list[int] = []  # batches leased when each harvest began

    def counted_harvest(batch_id: str, files: list[tuple[str, str]], summary: Any) -> None:
        with database.transaction() as session:
            held = select(func.count()).where(Batch.lease_owner == r.owner)
            leased.append(int(session.scalar(held) or 0))
        harvest(batch_id, files, summary)

    r._harvest = counted_harvest  # type: ignore[method-assign]
    summary = r.run_once()
    assert summary.list_pages >= 1 and summary.harvested == 6
    assert len(leased) == 6
    assert max(leased) <= 2, leased  # before: all 6, from the first harvest on
    with database.transaction() as session:
        states = session.scalars(select(Batch.harvest_state).where(Batch.id.in_(ended)))
        assert set(states) == {"done"}


def test_a_pass_that_runs_until_stopped_claims_for_a_minute_then_walks_again(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    """A backlog (each claim taking 30 s here) no longer keeps a pass claiming until it
    is all done: what falls due meanwhile would wait for all of it, the list walk too.
    ``--once`` still claims everything due."""
    batches = [sim.simulator.create_batch(5, Scenario(running_s=1e6)) for _ in range(6)]
    track(database, clock, *batches)
    r = reconciler(concurrency=1, page_size=1)
    process, run_once = r._process, r.run_once

    def slow(claim: Claim, summary: PassSummary) -> None:
        process(claim, summary)
        clock.advance(30)

    passes: list[PassSummary] = []
    stop = threading.Event()

    def one_pass(**kwargs: Any) -> PassSummary:
        passes.append(run_once(**kwargs))
        if len(passes) == 2:
            stop.set()
        return passes[-1]

    r._process = slow  # type: ignore[method-assign]
    r.run_once = one_pass  # type: ignore[method-assign]
    r.run(stop)
    # Before: the first pass claimed all six (three minutes of work).
    assert [p.claimed for p in passes] == [2, 2]
    with database.transaction() as session:
        due = session.scalar(select(func.count()).where(Batch.next_poll_at <= clock.now()))
    stop.clear()
    assert due is not None and due > 2
    assert r.run(once=True).claimed == due  # all that is due, however long it takes


def _backlog(database: Database, clock: ManualClock, ended: list[str], **flying: str) -> None:
    """``ended``: harvests due since ``clock.now()``; ``flying``: id -> status, due a
    minute later (a status of "completed" with no file ids: waiting for them)."""
    track(database, clock, *ended, *flying)
    with database.transaction() as session:
        session.execute(
            update(Batch)
            .where(Batch.id.in_(ended))
            .values(status="completed", output_file_id="file-out", next_poll_at=clock.now())
        )
        for batch_id, status in flying.items():
            session.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(status=status, next_poll_at=clock.now() + timedelta(seconds=60))
            )
    clock.advance(120)


def test_batches_in_flight_are_claimed_before_harvests_that_fell_due_earlier(
    database: Database, clock: ManualClock
) -> None:
    """A backlog of harvests due for minutes (each may be a long download) no longer
    keeps the batches in flight behind it unpolled."""
    _backlog(
        database,
        clock,
        ["batch_e1", "batch_e2", "batch_e3"],
        batch_f1="in_progress",
        batch_f2="in_progress",
    )
    polls = PollStore(database)
    first = polls.claim_due(now=clock.now(), owner="r1", lease_seconds=60, limit=3)
    # Before: the three harvests, due a minute earlier.
    assert [c.batch_id for c in first] == ["batch_f1", "batch_f2", "batch_e1"]
    rest = polls.claim_due(now=clock.now(), owner="r1", lease_seconds=60, limit=3)
    assert [c.batch_id for c in rest] == ["batch_e2", "batch_e3"]


def test_harvests_keep_a_claim_each_time_when_polls_would_fill_them_all(
    database: Database, clock: ManualClock
) -> None:
    """More batches in flight due than GETs keep up with must not stop every harvest."""
    flying = {f"batch_f{i}": "in_progress" for i in range(1, 7)}
    _backlog(database, clock, ["batch_e1", "batch_e2"], **flying)
    polls = PollStore(database)
    taken = [
        [
            c.batch_id
            for c in polls.claim_due(now=clock.now(), owner="r1", lease_seconds=60, limit=3)
        ]
        for _ in range(3)
    ]
    # Before: six polls first, the harvests only once no poll was due.
    assert taken == [
        ["batch_f1", "batch_f2", "batch_e1"],
        ["batch_f3", "batch_f4", "batch_e2"],
        ["batch_f5", "batch_f6"],
    ]


def test_an_ended_batch_waiting_for_its_file_ids_is_a_poll_not_a_harvest(
    database: Database, clock: ManualClock
) -> None:
    _backlog(database, clock, ["batch_e1", "batch_e2"], batch_w="completed")
    polls = PollStore(database)
    first = polls.claim_due(now=clock.now(), owner="r1", lease_seconds=60, limit=2)
    # Before: behind the harvests (it is ended), though its claim is a GET.
    assert [c.batch_id for c in first] == ["batch_w", "batch_e1"]


def test_a_pass_claims_at_least_once_however_long_its_walk_took(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    """The minute a pass claims for begins with its claims: a walk (and the harvests it
    began) that took longer used to end the pass before its first claim."""
    batch_id = sim.simulator.create_batch(5, Scenario(running_s=1e6))
    track(database, clock, batch_id)
    r = reconciler(concurrency=1, page_size=1)

    def long_walk(_summary: PassSummary, _running: set[Any]) -> None:
        clock.advance(120)
        return

    r._observe_by_list = long_walk  # type: ignore[method-assign,assignment]
    r.config = dataclasses.replace(r.config, list_min_tracked=1)
    assert r.run_once(claim_for=60).claimed == 1
