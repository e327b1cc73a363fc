"""One long harvest does not hold back the polls due behind it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from orchestrator.api.client import ApiResult, Download
from orchestrator.clock import ManualClock
from orchestrator.db.database import Database
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
