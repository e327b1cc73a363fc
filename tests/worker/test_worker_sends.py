"""The worker's sends through the async client: at most ``concurrency`` in flight,
never two for one batch, each answer recorded; a stop gives back what never started."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings
from orchestrator.clock import ManualClock
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import CancelAttempt, CancelRequest
from orchestrator.processes.sender import AsyncSender
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from orchestrator.secret import Secret
from tests.worker.fake_api import SECRET, batch_body

from .conftest import POLICY

WIDTH = 4


class SlowApi:
    """Cancels that wait for the next request to arrive (or for enough in flight), so
    sends overlap without any sleep; counts what is in flight, overall and per batch."""

    def __init__(self) -> None:
        self.in_flight: Counter[str] = Counter()
        self.most = 0
        self.twice: list[str] = []
        self.sent: Counter[str] = Counter()
        self.arrived: asyncio.Event | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        batch_id = request.url.path.split("/")[-2]
        if self.in_flight[batch_id]:
            self.twice.append(batch_id)
        self.in_flight[batch_id] += 1
        self.sent[batch_id] += 1
        self.most = max(self.most, sum(self.in_flight.values()))
        try:
            # Let the other sends of this tick start before answering.
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            self.in_flight[batch_id] -= 1
        return httpx.Response(200, json=batch_body(batch_id, "cancelling"))


def test_sends_overlap_up_to_the_width_never_twice_for_one_batch(
    database: Database, clock: ManualClock
) -> None:
    ids = [f"batch_{n:03d}" for n in range(40)]
    CancelStore(database).request(ids, now=clock.now(), requested_by="test")
    api = SlowApi()
    client = AsyncBatchApiClient(
        ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(api.handle),
        clock=clock,
    )
    worker = CancelWorker(
        CancelStore(database),
        client,
        config=WorkerConfig(concurrency=WIDTH, idle_seconds=0.01),
        policy=POLICY,
        clock=clock,
        owner="w1",
    )
    report = worker.run(threading.Event(), once=True)

    assert report.accepted == 40
    assert api.sent == Counter(dict.fromkeys(ids, 1))  # each once
    assert not api.twice
    assert 1 < api.most <= WIDTH
    with database.transaction() as s:
        assert s.scalar(select(func.count()).select_from(CancelAttempt)) == 40
        states = set(s.scalars(select(CancelRequest.state)))
    assert states == {"accepted"}


def test_a_stop_waits_for_the_send_on_the_wire_and_gives_back_the_queued_one(
    database: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    CancelStore(database).request(["batch_run", "batch_wait"], now=clock.now(), requested_by="t")
    stop = threading.Event()
    futures: list[Future[object]] = []
    queued_done = threading.Event()

    class Recording(AsyncSender):
        def submit_all(self, sends: Sequence[Any]) -> list[Future[Any]]:
            made = super().submit_all(sends)
            futures.extend(made)
            if len(futures) >= 2:
                futures[1].add_done_callback(lambda _f: queued_done.set())
            return made

    sent: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        batch_id = request.url.path.split("/")[-2]
        sent.append(batch_id)
        stop.set()  # the worker stops while this send is on the wire ...
        assert await asyncio.to_thread(queued_done.wait, 30)  # ... and drops the queued one
        return httpx.Response(200, json=batch_body(batch_id, "cancelling"))

    monkeypatch.setattr("orchestrator.processes.worker.AsyncSender", Recording)
    client = AsyncBatchApiClient(
        ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(handle),
        clock=clock,
    )
    worker = CancelWorker(
        CancelStore(database),
        client,
        config=WorkerConfig(concurrency=1, idle_seconds=0.01),
        policy=POLICY,
        clock=clock,
        owner="w1",
    )
    report = worker.run(stop)

    assert len(sent) == 1 and report.accepted == 1 and report.released == 1
    with database.transaction() as s:
        rows = {r.batch_id: r for r in s.scalars(select(CancelRequest))}
        assert rows[sent[0]].state == "accepted"
        queued = next(r for i, r in rows.items() if i != sent[0])
        assert (queued.state, queued.attempts, queued.lease_owner) == ("pending", 0, None)
