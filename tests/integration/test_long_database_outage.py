"""The worker and the reconciler ride out a database outage of thousands of failures in a
row (a 0.5 * 2**n backoff overflowed a float after about 1,024 of them), then recover and
do their work. Every wait goes through an injected sleep: no real waiting."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest

from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import CancelStore, Claim
from orchestrator.db.database import Database
from orchestrator.db.models import CancelRequest
from orchestrator.db.polls import Claim as PollClaim
from orchestrator.db.polls import PollStore
from orchestrator.errors import DatabaseUnavailable
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.processes.worker import CancelWorker, WorkerConfig

from .conftest import Sim, expected_outcomes, harvest_done, stored_outcomes, track

FAILURES = 5_000  # far past 1,024, where 2**n stopped being a float


class _Sleeps:
    """An injected sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, stop: threading.Event, seconds: float) -> None:
        self.waits.append(seconds)


class _DownFor:
    """Raises DatabaseUnavailable for the first `failures` calls, then calls through."""

    def __init__(self, failures: int) -> None:
        self.left = failures

    def check(self) -> None:
        if self.left > 0:
            self.left -= 1
            raise DatabaseUnavailable("database unavailable: connection refused")


def test_the_worker_rides_out_thousands_of_failures_then_sends_the_cancel(
    database: Database, sim: Sim, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = sim.simulator.create_batch(20, age_s=10)
    CancelStore(database).request([batch_id], now=clock.now(), requested_by="test")
    down = _DownFor(FAILURES)
    real_claim = CancelStore.claim_due

    def flaky_claim(
        self: CancelStore, owner: str, *, now: datetime, limit: int, lease_seconds: float
    ) -> list[Claim]:
        down.check()
        return real_claim(self, owner, now=now, limit=limit, lease_seconds=lease_seconds)

    monkeypatch.setattr(CancelStore, "claim_due", flaky_claim)
    sleeps = _Sleeps()
    config = WorkerConfig(concurrency=2, db_retry_initial_seconds=0.5, db_retry_max_seconds=30)
    worker = CancelWorker(
        CancelStore(database),
        sim.async_client(clock),
        config,
        clock,
        "outage-worker",
        policy=RetryPolicy(max_in_process_attempts=1),
        random_unit=lambda: 0.0,
        sleep=sleeps,
    )
    report = worker.run(once=True)

    assert report.db_outages == FAILURES
    assert len(sleeps.waits) >= FAILURES and max(sleeps.waits) == 30.0
    assert sleeps.waits[:3] == [0.5, 1.0, 2.0]  # doubling, then capped
    assert report.accepted == 1
    with database.transaction() as session:
        row = session.get(CancelRequest, batch_id)
        assert row is not None and row.lease_owner is None and row.attempts == 1


def test_the_reconciler_rides_out_thousands_of_failures_then_harvests(
    database: Database, sim: Sim, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = sim.simulator.create_batch(200, age_s=100)
    track(database, clock, batch_id)
    down = _DownFor(FAILURES)
    stop = threading.Event()
    real_claim = PollStore.claim_due

    def flaky_claim(self: PollStore, **kwargs: Any) -> list[PollClaim]:
        down.check()
        claims = real_claim(self, **kwargs)
        if not claims and harvest_done(database, batch_id):
            stop.set()  # everything done: ask the loop to end, as SIGTERM would
        return claims

    real_release = PollStore.release_owned

    def flaky_release(self: PollStore, *, owner: str) -> int:
        down.check()
        return real_release(self, owner=owner)

    monkeypatch.setattr(PollStore, "claim_due", flaky_claim)
    monkeypatch.setattr(PollStore, "release_owned", flaky_release)
    sleeps = _Sleeps()
    config = ReconcilerConfig(concurrency=2, chunk_lines=100, db_retry_initial_seconds=0.5)
    with (
        sim.client(clock) as client,
        Reconciler(
            database, client, config, clock, "outage-reconciler", stop=stop, sleep=sleeps
        ) as reconciler,
    ):
        total = reconciler.run()

    assert total.stopped and total.db_outages == FAILURES
    assert len(sleeps.waits) >= FAILURES and max(sleeps.waits) == 30.0
    assert sleeps.waits[:3] == [0.5, 1.0, 2.0]
    assert total.harvested == 1 and total.results_stored == 200
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)
