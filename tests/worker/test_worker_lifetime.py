"""A worker that runs until stopped keeps the outcomes of its most recent cancels only
(``processes/recent.py``), its counts exact; one drain (``--once``) keeps them all."""

from __future__ import annotations

import threading

import httpx

from orchestrator.clock import ManualClock
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.processes.recent import RECENT_KEPT
from tests.worker.fake_api import batch_body

from .test_worker_sends import worker_for

CANCELS = RECENT_KEPT + 50


def test_a_worker_until_stopped_keeps_the_most_recent_outcomes_and_counts_every_one(
    database: Database, clock: ManualClock
) -> None:
    ids = [f"batch_{n:03d}" for n in range(CANCELS)]
    CancelStore(database).request(ids, now=clock.now(), requested_by="test")
    stop = threading.Event()
    sent: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        batch_id = request.url.path.split("/")[-2]
        sent.append(batch_id)
        if len(sent) == CANCELS:
            stop.set()  # the last one is answered and recorded as the worker stops
        return httpx.Response(200, json=batch_body(batch_id, "cancelling"))

    report = worker_for(database, clock, handle).run(stop)  # one send at a time

    assert sorted(sent) == ids
    assert (report.sent, report.accepted) == (CANCELS, CANCELS)  # every count exact
    assert list(report.outcomes) == sent[-RECENT_KEPT:]  # the most recent, in order
    assert set(report.outcomes.values()) == {"accepted"}
    assert report.outcomes_left_out == CANCELS - RECENT_KEPT
    data = report.to_dict()
    assert data["outcomes_left_out"] == CANCELS - RECENT_KEPT and "keep" not in data
    assert "50 older left out" in report.summary()


def test_one_drain_keeps_every_outcome(database: Database, clock: ManualClock) -> None:
    ids = [f"batch_{n:03d}" for n in range(CANCELS)]
    CancelStore(database).request(ids, now=clock.now(), requested_by="test")

    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=batch_body(request.url.path.split("/")[-2], "cancelling"))

    report = worker_for(database, clock, handle, concurrency=4).run(threading.Event(), once=True)

    assert sorted(report.outcomes) == ids and report.accepted == CANCELS
    assert report.outcomes_left_out == 0 and "left out" not in report.summary()
