"""A reconciler that runs for months: its lifetime total counts everything exactly, but
lists only the most recent entries (``processes/recent.py``), so a persistent fault
cannot grow it without end; one pass (``--once``) still lists everything."""

from __future__ import annotations

import threading
from typing import Any, cast

from orchestrator.api.client import BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.db.database import Database
from orchestrator.processes.recent import RECENT_KEPT
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig

from .conftest import track

BATCHES = 30
ROUNDS = 10  # passes that find every batch due: 300 unexpected errors, RECENT_KEPT is 100


class BrokenClient:
    """Every poll meets an unexpected error (a bug, say), naming the round it is in."""

    def __init__(self) -> None:
        self.round = 1

    def retrieve(self, batch_id: str) -> Any:
        raise RuntimeError(f"round {self.round}")

    def close(self) -> None:
        pass

    def as_client(self) -> BatchApiClient:
        return cast(BatchApiClient, self)


def test_the_lifetime_total_lists_the_most_recent_entries_and_counts_every_one(
    database: Database, clock: ManualClock
) -> None:
    ids = [f"batch_{n:03d}" for n in range(BATCHES)]
    track(database, clock, *ids)
    client = BrokenClient()
    stop = threading.Event()

    def sleep(_stop: threading.Event, _seconds: float) -> None:
        # An idle wait: every batch has been tried and backed off. A day later all are due.
        if client.round == ROUNDS:
            stop.set()
            return
        client.round += 1
        clock.advance(86_400)

    config = ReconcilerConfig(concurrency=4, summary_seconds=0)
    with Reconciler(
        database, client.as_client(), config, clock, "r1", random_unit=lambda: 0.0, sleep=sleep
    ) as reconciler:
        total = reconciler.run(stop)

    errors = BATCHES * ROUNDS
    assert (total.claimed, total.poll_failures) == (errors, errors)  # every count exact
    assert len(total.errors) == RECENT_KEPT
    assert total.left_out["errors"] == errors - RECENT_KEPT
    # The most recent: every error of the last three rounds, none from before the seventh.
    rounds = [int(e.rsplit("round ", 1)[1]) for e in total.errors]
    assert min(rounds) >= ROUNDS - 3
    assert sum(r > ROUNDS - 3 for r in rounds) == 3 * BATCHES
    report = total.to_dict()
    assert report["left_out"] == {**dict.fromkeys(total.left_out, 0), "errors": 200}
    assert "keep" not in report


def test_one_pass_lists_every_entry(database: Database, clock: ManualClock) -> None:
    ids = [f"batch_{n:03d}" for n in range(RECENT_KEPT + 20)]
    track(database, clock, *ids)
    config = ReconcilerConfig(concurrency=4, summary_seconds=0)
    client = BrokenClient().as_client()
    with Reconciler(database, client, config, clock, "r1", random_unit=lambda: 0.0) as reconciler:
        summary = reconciler.run(once=True)

    assert len(summary.errors) == len(ids) == summary.poll_failures
    assert sorted(e.split(":")[0] for e in summary.errors) == ids
    assert sum(summary.left_out.values()) == 0
