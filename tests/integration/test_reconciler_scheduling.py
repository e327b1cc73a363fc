"""One long harvest does not hold back the polls due behind it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from orchestrator.api.client import ApiResult, Download
from orchestrator.clock import ManualClock
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from orchestrator.db.polls import Claim
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
