"""The worker's sends through the async client: at most ``concurrency`` in flight,
never two for one batch, each answer recorded; a stop gives back what never started."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
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


def worker_for(
    database: Database,
    clock: ManualClock,
    handle: Callable[[httpx.Request], Coroutine[None, None, httpx.Response]],
    *,
    concurrency: int = 1,
    store: CancelStore | None = None,
) -> CancelWorker:
    """A worker ``w1`` whose API answers with ``handle``."""
    client = AsyncBatchApiClient(
        ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(handle),
        clock=clock,
    )
    config = WorkerConfig(concurrency=concurrency, idle_seconds=0.01)
    store = store or CancelStore(database)
    return CancelWorker(store, client, config=config, policy=POLICY, clock=clock, owner="w1")


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
    worker = worker_for(database, clock, api.handle, concurrency=WIDTH)
    report = worker.run(threading.Event(), once=True)

    assert report.accepted == 40
    assert api.sent == Counter(dict.fromkeys(ids, 1))  # each once
    assert not api.twice
    assert 1 < api.most <= WIDTH
    with database.transaction() as s:
        assert s.scalar(select(func.count()).select_from(CancelAttempt)) == 40
        states = set(s.scalars(select(CancelRequest.state)))
    assert states == {"accepted"}


def test_a_worker_never_claims_again_a_cancel_it_is_still_sending(
    database: Database, clock: ManualClock
) -> None:
    """The worker's turns stall past the lease (a database outage; here the clock jumps)
    while a send is on the wire: the lease has expired, and the next claim must not hand
    the worker that cancel again, or it would be sent twice at once."""
    store = CancelStore(database)
    store.request(["batch_a"], now=clock.now(), requested_by="t")
    lease_seconds = WorkerConfig().lease_seconds
    stop = threading.Event()
    sent: list[str] = []
    jumped, claimed_after = threading.Event(), threading.Event()
    claim_due = store.claim_due

    def claiming(owner: str, *, now: Any, limit: int, lease_seconds: float) -> Any:
        claims = claim_due(owner, now=now, limit=limit, lease_seconds=lease_seconds)
        if jumped.is_set():
            claimed_after.set()
        return claims

    store.claim_due = claiming  # type: ignore[method-assign]

    async def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path.split("/")[-2])
        if len(sent) == 1:
            clock.advance(lease_seconds + 10)  # the lease ran out meanwhile
            jumped.set()
            assert await asyncio.to_thread(claimed_after.wait, 30)  # a turn has claimed
        stop.set()
        return httpx.Response(200, json=batch_body("batch_a", "cancelling"))

    report = worker_for(database, clock, handle, concurrency=2, store=store).run(stop)
    assert sent == ["batch_a"] and report.accepted == 1


def test_a_signal_aborts_the_send_on_the_wire_and_gives_back_the_queued_ones_unsent(
    database: Database, clock: ManualClock
) -> None:
    """SIGTERM sets the stop and aborts the client (``stop_on_signals``). The aborted send
    ends, and its slot would start a queued one, which the aborted client ends at once:
    it never left the host, so it is given back as it was (no attempt counted, due at
    once for the next worker), not recorded as a failed attempt put off by a backoff."""
    ids = ["batch_run", "batch_wait1", "batch_wait2"]
    CancelStore(database).request(ids, now=clock.now(), requested_by="t")
    stop = threading.Event()
    sent: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path.split("/")[-2])
        stop.set()  # what the signal handler does: stop, then abort the calls in flight
        worker.client.abort()
        await asyncio.Event().wait()  # a slow server: only the abort ends this
        raise AssertionError("not reached")

    worker = worker_for(database, clock, handle)
    report = worker.run(stop)

    assert len(sent) == 1 and report.released == 1  # two claimed (twice the concurrency)
    with database.transaction() as s:
        rows = {r.batch_id: r for r in s.scalars(select(CancelRequest))}
        attempts = list(s.scalars(select(CancelAttempt.batch_id)))
    assert attempts == sent  # the one that was on the wire: whether it arrived is unknown
    assert (rows[sent[0]].state, rows[sent[0]].attempts) == ("pending", 1)
    for batch_id in set(ids) - set(sent):
        row = rows[batch_id]
        assert (row.state, row.attempts, row.lease_owner) == ("pending", 0, None)
        assert row.next_attempt_at is None or row.next_attempt_at <= clock.now()


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
    report = worker_for(database, clock, handle).run(stop)

    assert len(sent) == 1 and report.accepted == 1 and report.released == 1
    with database.transaction() as s:
        rows = {r.batch_id: r for r in s.scalars(select(CancelRequest))}
        assert rows[sent[0]].state == "accepted"
        queued = next(r for i, r in rows.items() if i != sent[0])
        assert (queued.state, queued.attempts, queued.lease_owner) == ("pending", 0, None)
