from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings
from orchestrator.clock import ManualClock
from orchestrator.core.liveness import OwnHeartbeats
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent, CancelAttempt, CancelRequest
from orchestrator.errors import DatabaseUnavailable
from orchestrator.processes.sender import AsyncSender
from orchestrator.processes.worker import CancelWorker, WorkerConfig, _NotSent
from orchestrator.secret import Secret
from tests.worker.fake_api import SECRET, FakeApi, error, fail, ok

from .conftest import POLICY, T0


def make_worker(
    database: Database,
    client: AsyncBatchApiClient,
    clock: ManualClock,
    owner: str = "w1",
    **config: float,
) -> CancelWorker:
    return CancelWorker(
        CancelStore(database),
        client,
        config=WorkerConfig(concurrency=4, idle_seconds=0.01, **config),
        policy=POLICY,
        clock=clock,
        owner=owner,
        random_unit=lambda: 0.0,
    )


def request(database: Database, *ids: str, now: datetime = T0) -> None:
    CancelStore(database).request(ids, now=now, requested_by="test", reason="budget")


def cancel_row(database: Database, batch_id: str) -> CancelRequest:
    with database.transaction() as s:
        row = s.get(CancelRequest, batch_id)
        assert row is not None
        return row


def test_an_accepted_cancel_records_the_cancelling_batch(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    request(database, "batch_a", "batch_b")
    report = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert report.accepted == 2
    assert api.calls[("cancel", "batch_a")] == 1
    row = cancel_row(database, "batch_a")
    assert (row.state, row.attempts, row.last_http_status) == ("accepted", 1, 200)
    assert row.lease_owner is None
    with database.transaction() as s:
        batch = s.get(Batch, "batch_a")
        assert batch is not None and batch.status == "cancelling"
        assert batch.cancelling_at is not None
        attempts = s.scalars(select(CancelAttempt)).all()
        assert [(a.outcome, a.http_status) for a in attempts] == [("accepted", 200)] * 2


def test_asking_twice_sends_once(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    request(database, "batch_a")
    request(database, "batch_a")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    request(database, "batch_a")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert api.calls[("cancel", "batch_a")] == 1


def test_a_refused_cancel_of_a_completed_batch_ends_too_late(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    api.on_cancel("batch_done", fail(400, "Cannot cancel a batch with status 'completed'."))
    api.on_retrieve(
        "batch_done",
        ok("batch_done", "completed", completed_at=1_767_226_000, output_file_id="file-out"),
    )
    request(database, "batch_done")
    report = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert report.too_late == 1
    row = cancel_row(database, "batch_done")
    assert (row.state, row.outcome, row.last_http_status) == ("closed", "too_late:completed", 400)
    with database.transaction() as s:
        batch = s.get(Batch, "batch_done")
        assert batch is not None and batch.status == "completed"
        assert batch.output_file_id == "file-out"  # harvest goes on
    assert api.calls[("cancel", "batch_done")] == 1


@pytest.mark.parametrize("status_then", ["cancelling", "cancelled"])
def test_a_refusal_of_a_batch_already_cancelling_counts_as_done(
    database: Database,
    api: FakeApi,
    client: AsyncBatchApiClient,
    clock: ManualClock,
    status_then: str,
) -> None:
    api.on_cancel("batch_c", fail(409, "conflict"))
    api.on_retrieve(
        "batch_c",
        ok("batch_c", status_then, cancelling_at=1_767_225_700, cancelled_at=1_767_225_800),
    )
    request(database, "batch_c")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    row = cancel_row(database, "batch_c")
    assert row.state in ("accepted", "closed")
    if status_then == "cancelled":
        assert row.outcome == "cancelled"


def test_a_404_fails_the_request_with_a_clear_error(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    api.on_cancel("batch_ghost", fail(404, "No batch found"))
    api.on_retrieve("batch_ghost", fail(404, "No batch found"))
    request(database, "batch_ghost")
    report = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert report.failed == 1
    row = cancel_row(database, "batch_ghost")
    assert (row.state, row.outcome) == ("failed", "not_found")
    assert row.last_error is not None and "not visible to this key" in row.last_error


def test_a_long_retry_after_is_persisted_not_slept(
    database: Database,
    api: FakeApi,
    client: AsyncBatchApiClient,
    clock: ManualClock,
    sleeps: list[float],
) -> None:
    api.on_cancel(
        "batch_r", fail(429, "slow down", **{"retry-after": "120"}), ok("batch_r", "cancelling")
    )
    request(database, "batch_r")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert sleeps == []
    row = cancel_row(database, "batch_r")
    assert row.state == "pending"
    assert row.next_attempt_at == T0 + timedelta(seconds=120)
    # nothing is due until then: a second pass sends nothing
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert api.calls[("cancel", "batch_r")] == 1
    clock.advance(120)
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert cancel_row(database, "batch_r").state == "accepted"
    assert api.calls[("cancel", "batch_r")] == 2


def test_5xx_is_retried_in_process_then_durably(
    database: Database,
    api: FakeApi,
    client: AsyncBatchApiClient,
    clock: ManualClock,
    sleeps: list[float],
) -> None:
    api.on_cancel("batch_5", fail(503, "busy"))
    request(database, "batch_5")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert api.calls[("cancel", "batch_5")] == 2  # max_in_process_attempts
    assert sleeps == [0.5]
    row = cancel_row(database, "batch_5")
    assert row.state == "pending" and row.last_http_status == 503
    assert row.next_attempt_at == T0 + timedelta(seconds=5)  # durable backoff, attempt 1


def test_401_pauses_every_worker_without_a_hot_loop(
    database: Database,
    api: FakeApi,
    client: AsyncBatchApiClient,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for batch_id in ("batch_1", "batch_2", "batch_3"):
        api.on_cancel(batch_id, fail(401, f"Incorrect API key provided: {SECRET}"))
    request(database, "batch_1", "batch_2", "batch_3")
    with caplog.at_level(logging.INFO):
        first = make_worker(database, client, clock, owner="w1").run(threading.Event(), once=True)
        assert first.paused is not None and "OPENAI_API_KEY" in first.paused
        sent = sum(api.calls.values())
        other = make_worker(database, client, clock, owner="w2").run(threading.Event(), once=True)
    assert sum(api.calls.values()) == sent  # the second worker sent nothing
    assert other.sent == 0 and other.paused is not None
    assert all(cancel_row(database, b).state == "pending" for b in ("batch_1", "batch_2"))
    assert SECRET not in caplog.text


def test_resume_lifts_the_pause_and_the_held_back_cancels_go_out_at_once(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    api.on_cancel("batch_k", fail(401, "Incorrect API key provided"), ok("batch_k", "cancelling"))
    request(database, "batch_k")
    paused = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert paused.paused is not None
    assert cancel_row(database, "batch_k").next_attempt_at == T0 + timedelta(seconds=300)

    clock.advance(5)  # the key is fixed a few seconds later: no need to wait 300 s
    lifted, due = CancelStore(database).resume(now=clock.now())
    assert lifted is not None and "HTTP 401" in lifted.reason and due == 1
    after = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert (after.paused, after.accepted) == (None, 1)
    assert cancel_row(database, "batch_k").state == "accepted"
    assert CancelStore(database).resume(now=clock.now()) == (None, 0)  # twice is harmless


def _recording_sender(
    futures: dict[str, Future[Any]], submitted: threading.Event
) -> type[AsyncSender]:
    """An AsyncSender that files each send's future under its batch id in ``futures``
    and sets ``submitted`` once they are all handed over."""

    class Recording(AsyncSender):
        def submit_all(self, sends: Sequence[Any]) -> list[Future[Any]]:
            made = super().submit_all(sends)
            futures.update((send.args[0].batch_id, f) for send, f in zip(sends, made, strict=True))
            submitted.set()
            return made

    return Recording


def test_after_a_401_the_cancels_queued_behind_it_are_given_back_unsent(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    """A tick claims twice the concurrency (8); the first 401 is known before any queued
    send starts: those are never sent (each would have met its own 401 and counted as an
    attempt), but given back as they were, due when the pause ends or ``resume`` lifts
    it. Only sends already on the wire (at most the concurrency) may meet the 401 too."""
    ids = [f"batch_{i}" for i in range(8)]
    for batch_id in ids:
        api.on_cancel(batch_id, fail(401, "Incorrect API key provided"))
    request(database, *ids)
    report = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert report.paused is not None
    sent = [b for b in ids if api.calls[("cancel", b)]]
    assert 1 <= len(sent) <= 4 and report.released == len(ids) - len(sent), (sent, report)
    with database.transaction() as s:
        attempted = sorted(s.scalars(select(CancelAttempt.batch_id)))
    assert attempted == sorted(sent)
    for batch_id in ids:
        row = cancel_row(database, batch_id)
        if batch_id in sent:
            assert (row.state, row.attempts, row.last_http_status) == ("pending", 1, 401)
        else:  # untouched: no attempt, no error, no lease, and no backoff of its own
            assert (row.state, row.attempts, row.lease_owner) == ("pending", 0, None)
            assert (row.last_attempt_at, row.last_http_status, row.last_error) == (None,) * 3
            assert row.next_attempt_at is not None
            assert row.next_attempt_at.replace(tzinfo=T0.tzinfo) <= clock.now()

    clock.advance(5)  # while the pause holds, no worker sends them
    held = make_worker(database, client, clock, owner="w2").run(threading.Event(), once=True)
    assert (held.sent, sum(api.calls.values())) == (0, len(sent))
    for batch_id in ids:  # the key is fixed
        api.on_cancel(batch_id, ok(batch_id, "cancelling"))
    lifted, _ = CancelStore(database).resume(now=clock.now())
    assert lifted is not None and CancelStore(database).due_count(clock.now()) == len(ids)
    after = make_worker(database, client, clock, owner="w3").run(threading.Event(), once=True)
    assert (after.paused, after.accepted) == (None, len(ids))
    assert all(api.calls[("cancel", b)] == 1 + (b in sent) for b in ids)


def test_no_retry_goes_out_once_another_send_met_a_401(
    database: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sends on the wire: batch_a meets a 503, and while it waits to retry in-process
    batch_k meets a 401. The retry does not go out (the key is refused: it would be a
    second request refused); batch_a's one try is recorded, as any try that went out."""
    futures: dict[str, Future[Any]] = {}
    submitted = threading.Event()  # the sends may start before submit_all returns

    Recording = _recording_sender(futures, submitted)

    calls: Counter[str] = Counter()
    a_answered = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        batch_id = request.url.path.split("/")[-2]
        calls[batch_id] += 1
        if batch_id == "batch_a":
            a_answered.set()
            return (
                error(503, "busy") if calls[batch_id] == 1 else ok(batch_id, "cancelling")(request)
            )
        await a_answered.wait()  # batch_a is on the wire first, whatever the tasks' order
        return error(401, "Incorrect API key provided")

    async def sleep(_seconds: float) -> None:  # batch_a's wait to retry: until batch_k ended
        assert await asyncio.to_thread(submitted.wait, 30)
        await asyncio.wrap_future(futures["batch_k"])

    client = AsyncBatchApiClient(
        ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(handle),
        sleep=sleep,
        clock=clock,
        random=lambda: 0.0,
    )
    monkeypatch.setattr("orchestrator.processes.worker.AsyncSender", Recording)
    request(database, "batch_a", "batch_k")
    report = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert report.paused is not None
    assert calls == Counter({"batch_a": 1, "batch_k": 1})
    row = cancel_row(database, "batch_a")
    assert (row.state, row.attempts, row.last_http_status) == ("pending", 1, 503)


def test_no_get_follows_a_refused_cancel_once_another_send_met_a_401(
    database: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """batch_k meets a 401; batch_a's cancel, answered 404 only after that, would be
    followed by a GET of the batch: it is held back as a retry would be (the key is
    refused: it would be one more request refused)."""
    futures: dict[str, Future[Any]] = {}
    submitted = threading.Event()

    Recording = _recording_sender(futures, submitted)

    calls: Counter[tuple[str, str]] = Counter()

    async def handle(request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        cancel = parts[-1] == "cancel"
        batch_id = parts[-2] if cancel else parts[-1]
        calls[("cancel" if cancel else "get", batch_id)] += 1
        if batch_id == "batch_k":
            return error(401, "Incorrect API key provided")
        if cancel:  # batch_a: refused once batch_k's 401 is known
            assert await asyncio.to_thread(submitted.wait, 30)
            await asyncio.wrap_future(futures["batch_k"])
            return error(404, "No batch found")
        return ok(batch_id, "in_progress")(request)

    client = AsyncBatchApiClient(
        ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(handle),
        clock=clock,
        random=lambda: 0.0,
    )
    monkeypatch.setattr("orchestrator.processes.worker.AsyncSender", Recording)
    request(database, "batch_a", "batch_k")
    report = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert report.paused is not None
    # Before: the GET of batch_a went out after the 401.
    assert calls == Counter({("cancel", "batch_a"): 1, ("cancel", "batch_k"): 1})
    row = cancel_row(database, "batch_a")
    assert (row.state, row.attempts, row.last_http_status) == ("pending", 1, 404)
    assert row.last_error is not None and "held back" in row.last_error


def test_a_pause_an_outage_kept_from_being_written_is_written_at_the_next_turn(
    database: Database,
    api: FakeApi,
    client: AsyncBatchApiClient,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api.on_cancel("batch_a", fail(401, "Incorrect API key provided"))
    request(database, "batch_a")
    pause = CancelStore.pause
    failed: list[str] = []

    def flaky_pause(self: CancelStore, reason: str, *, now: datetime, until: datetime) -> None:
        if not failed:
            failed.append(reason)
            raise DatabaseUnavailable("database unavailable: connection refused")
        pause(self, reason, now=now, until=until)

    monkeypatch.setattr(CancelStore, "pause", flaky_pause)
    worker = make_worker(database, client, clock, db_retry_initial_seconds=0.001)
    report = worker.run(threading.Event(), once=True)
    assert failed and report.db_outages == 1
    # Before: the answer was recorded, then the pause was lost with the outage, and every
    # other worker went on sending with the refused key.
    written = CancelStore(database).active_pause(clock.now())
    assert written is not None and "HTTP 401" in written.reason


def test_leases_keep_a_request_to_one_worker_and_expire_for_recovery(
    database: Database, clock: ManualClock
) -> None:
    store = CancelStore(database)
    request(database, "batch_l")
    assert [c.batch_id for c in store.claim_due("w1", now=T0, limit=10, lease_seconds=60)] == [
        "batch_l"
    ]
    assert store.claim_due("w2", now=T0 + timedelta(seconds=59), limit=10, lease_seconds=60) == []
    assert store.heartbeat("w1", ["batch_l"], now=T0 + timedelta(seconds=50), lease_seconds=60)
    assert store.claim_due("w2", now=T0 + timedelta(seconds=100), limit=10, lease_seconds=60) == []
    recovered = store.claim_due("w2", now=T0 + timedelta(seconds=111), limit=10, lease_seconds=60)
    assert [c.batch_id for c in recovered] == ["batch_l"]
    assert cancel_row(database, "batch_l").lease_owner == "w2"


def test_a_dead_workers_late_answer_does_not_overwrite_the_live_one(
    database: Database, clock: ManualClock
) -> None:
    from orchestrator.core.cancel_policy import Attempt, AttemptOutcome

    store = CancelStore(database)
    request(database, "batch_z")
    (stale,) = store.claim_due("w1", now=T0, limit=1, lease_seconds=10)
    (live,) = store.claim_due("w2", now=T0 + timedelta(seconds=11), limit=1, lease_seconds=10)
    assert live.batch_id == stale.batch_id
    auth = Attempt(
        AttemptOutcome.AUTH,
        T0 + timedelta(seconds=11),
        T0 + timedelta(seconds=12),
        http_status=401,
        error="HTTP 401",
        retry_at=T0 + timedelta(minutes=5),
    )
    assert store.record_attempt(live, "w2", auth) == "pending"
    again = store.claim_due("w2", now=T0 + timedelta(minutes=5), limit=1, lease_seconds=10)
    assert [c.batch_id for c in again] == ["batch_z"]  # w2 holds it again, after the pause
    late = Attempt(
        AttemptOutcome.RETRY,
        T0,
        T0 + timedelta(minutes=5, seconds=1),
        http_status=503,
        error="HTTP 503",
        retry_at=T0 + timedelta(hours=1),
    )
    assert store.record_attempt(stale, "w1", late) == "pending"
    row = cancel_row(database, "batch_z")
    assert (row.lease_owner, row.next_attempt_at) == ("w2", T0 + timedelta(minutes=5))
    # counted, but the request still shows the live worker's 401 (``resume`` looks for it)
    assert (row.attempts, row.last_http_status, row.last_error) == (2, 401, "HTTP 401")


def test_a_terminal_batch_we_know_of_is_closed_without_sending(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    from orchestrator.core.observation import parse_batch
    from orchestrator.db.batches import BatchStore
    from tests.worker.fake_api import batch_body

    BatchStore(database).record_observation(
        parse_batch(batch_body("batch_old", "expired", expired_at=1_767_226_000)),
        now=T0,
        source="reconciler",
    )
    summary = CancelStore(database).request(["batch_old"], now=T0, requested_by="t")
    assert summary.closed_at_once == {"batch_old": "too_late:expired"}
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert api.calls[("cancel", "batch_old")] == 0


def test_the_key_is_in_no_database_row(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    api.on_cancel("batch_k", fail(401, f"bad key {SECRET}"))
    api.on_cancel("batch_j", fail(400, f"echo {SECRET}"))
    api.on_retrieve("batch_j", fail(500, f"echo {SECRET}"))
    request(database, "batch_k", "batch_j")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert f"Bearer {SECRET}" in api.auth_headers  # it was really used
    with database.transaction() as s:
        for table in ("batches", "batch_events", "cancel_requests", "cancel_attempts", "pauses"):
            for row in s.execute(text(f"SELECT * FROM {table}")):
                assert SECRET not in " ".join(str(v) for v in row), table


def test_a_transport_error_escaping_is_retried_durably(
    database: Database, clock: ManualClock, sleeps: list[float]
) -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    settings = ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1")
    broken = AsyncBatchApiClient(
        settings,
        policy=POLICY,
        transport=httpx.MockTransport(explode),
        sleep=sleep,
        clock=clock,
        random=lambda: 0.0,
    )
    request(database, "batch_t")
    make_worker(database, broken, clock).run(threading.Event(), once=True)
    row = cancel_row(database, "batch_t")
    assert row.state == "pending" and row.attempts == 1
    assert row.last_error is not None and "could not connect" in row.last_error


def test_a_worker_the_database_has_not_heard_lately_claims_and_sends_nothing(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    """Its own heartbeat is 11 s old (an outage, say): others may soon take its leases,
    so a cancel it sent now could cross theirs (core/liveness.py). Heard again, it sends."""
    request(database, "batch_a")
    own = database.own_heartbeats = OwnHeartbeats(timedelta(seconds=20))
    own.registered(clock.now() - timedelta(seconds=11), others_heard=True)
    report = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert (report.accepted, api.calls[("cancel", "batch_a")]) == (0, 0)
    row = cancel_row(database, "batch_a")
    assert (row.state, row.attempts, row.lease_owner) == ("pending", 0, None)
    own.beat(clock.now())
    report = make_worker(database, client, clock).run(threading.Event(), once=True)
    assert (report.accepted, api.calls[("cancel", "batch_a")]) == (1, 1)


def test_a_claim_held_back_unheard_is_given_back_and_sent_once_heard(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    """Claimed while heard, the worker's heartbeat lapsed before the send started: the
    send is held back and its lease given back at once (not kept until it expires)."""
    request(database, "batch_a")
    worker = make_worker(database, client, clock)
    heard = itertools.chain([True, False], itertools.repeat(True))  # claim, send, then on
    worker._heard = lambda now, run=None: next(heard)  # type: ignore[method-assign]
    report = worker.run(threading.Event(), once=True)
    assert (report.released, report.accepted, api.calls[("cancel", "batch_a")]) == (1, 1, 1)
    assert cancel_row(database, "batch_a").attempts == 1


class ScriptedBudget:
    """The shared request budget, scripted: each ``take`` says how long every process
    is held back (a 429's Retry-After another process got); 0 once the script runs out."""

    def __init__(self, *waits: float) -> None:
        self.waits = list(waits)

    def take(self) -> float:
        return self.waits.pop(0) if self.waits else 0.0

    def take_nowait(self) -> float | None:
        return self.take()

    def rate_limited(self, retry_after: float | None) -> None:
        pass


def budget_client(api: FakeApi, clock: ManualClock, budget: ScriptedBudget) -> AsyncBatchApiClient:
    async def sleep(seconds: float) -> None:  # not slept
        pass

    return AsyncBatchApiClient(
        ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=api.transport(),
        sleep=sleep,
        clock=clock,
        random=lambda: 0.0,
        budget=budget,
    )


def test_a_cancel_the_budget_held_back_is_no_attempt_and_can_still_be_withdrawn(
    database: Database, api: FakeApi, clock: ManualClock
) -> None:
    """Nothing left the host: no attempt is counted or recorded, the request is put
    off by the hold only, its lease given back, and ``cancel --withdraw`` still works."""
    request(database, "batch_h")
    worker = make_worker(database, budget_client(api, clock, ScriptedBudget(60.0)), clock)
    report = worker.run(threading.Event(), once=True)
    assert sum(api.calls.values()) == 0
    assert (report.sent, report.held) == (0, 1)
    row = cancel_row(database, "batch_h")
    assert (row.state, row.attempts, row.lease_owner) == ("pending", 0, None)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at.replace(tzinfo=T0.tzinfo) == T0 + timedelta(seconds=60)
    assert (row.last_attempt_at, row.last_http_status, row.last_error) == (None, None, None)
    with database.transaction() as s:
        assert s.scalars(select(CancelAttempt)).all() == []
    summary = CancelStore(database).withdraw(["batch_h"], now=clock.now())
    assert summary.withdrawn == ["batch_h"], summary.refused


def test_holds_do_not_lengthen_the_backoff_after_the_first_real_failure(
    database: Database, api: FakeApi, clock: ManualClock
) -> None:
    """Held back three times, then a 503 that went out: that is attempt 1, and it
    waits the first durable backoff, not the fourth's."""
    request(database, "batch_h")
    api.on_cancel("batch_h", fail(503))
    worker = make_worker(
        database, budget_client(api, clock, ScriptedBudget(60.0, 60.0, 60.0)), clock
    )
    for _ in range(3):
        worker.run(threading.Event(), once=True)
        clock.advance(60)
    assert sum(api.calls.values()) == 0
    worker.run(threading.Event(), once=True)
    assert api.calls[("cancel", "batch_h")] == POLICY.max_in_process_attempts
    row = cancel_row(database, "batch_h")
    assert (row.attempts, row.last_http_status) == (1, 503)
    assert row.next_attempt_at is not None
    waited = (row.next_attempt_at.replace(tzinfo=T0.tzinfo) - clock.now()).total_seconds()
    assert waited == POLICY.durable_backoff(1, 0.0)
    with database.transaction() as s:
        assert [a.attempt for a in s.scalars(select(CancelAttempt))] == [1]


def test_a_cancel_that_went_out_then_was_held_back_is_an_attempt(
    database: Database, api: FakeApi, clock: ManualClock
) -> None:
    """A 503 went out, the in-process retry was held back: the cancel may have reached
    the server, so it is an attempt, recorded, and withdrawing it is refused."""
    request(database, "batch_h")
    api.on_cancel("batch_h", fail(503))
    worker = make_worker(database, budget_client(api, clock, ScriptedBudget(0.0, 60.0)), clock)
    worker.run(threading.Event(), once=True)
    assert api.calls[("cancel", "batch_h")] == 1
    assert cancel_row(database, "batch_h").attempts == 1
    with database.transaction() as s:
        assert len(s.scalars(select(CancelAttempt)).all()) == 1
    summary = CancelStore(database).withdraw(["batch_h"], now=clock.now())
    assert summary.withdrawn == [] and "batch_h" in summary.refused, summary


class FailingRecords(CancelStore):
    """Recording the tick's answers fails, and so does recording the first one alone."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.failures = 2

    def record_attempts(self, owner: str, finished: Any) -> dict[str, str]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("disk full")
        return super().record_attempts(owner, finished)


def test_a_hold_whose_recording_failed_is_still_no_attempt_and_waits_the_backoff(
    database: Database, api: FakeApi, clock: ManualClock
) -> None:
    request(database, "batch_h")
    store = FailingRecords(database)
    worker = CancelWorker(
        store,
        budget_client(api, clock, ScriptedBudget(60.0)),
        config=WorkerConfig(concurrency=4, idle_seconds=0.01),
        policy=POLICY,
        clock=clock,
        owner="w1",
        random_unit=lambda: 0.0,
    )
    worker.run(threading.Event(), once=True)
    row = cancel_row(database, "batch_h")
    assert (row.state, row.attempts, row.lease_owner) == ("pending", 0, None)
    assert row.next_attempt_at is not None
    waited = (row.next_attempt_at.replace(tzinfo=T0.tzinfo) - T0).total_seconds()
    assert waited == POLICY.durable_backoff(1, 0.0)  # not due again at once
    with database.transaction() as s:
        assert s.scalars(select(CancelAttempt)).all() == []
        kinds = s.scalars(select(BatchEvent.kind).where(BatchEvent.batch_id == "batch_h")).all()
    assert "unexpected_error" in kinds


def test_no_retry_goes_out_once_the_database_stops_hearing_the_worker(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    """The first try took 15 s and met a 503, while the worker's heartbeat could not
    reach the database: its lease may be another's by now, so no retry goes out."""
    request(database, "batch_a")
    own = database.own_heartbeats = OwnHeartbeats(timedelta(seconds=20))
    own.registered(clock.now(), others_heard=True)

    def slow_503(_: httpx.Request) -> httpx.Response:
        clock.advance(15)
        return error(503, "busy")

    api.on_cancel("batch_a", slow_503)
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert api.calls[("cancel", "batch_a")] == 1
    assert cancel_row(database, "batch_a").state == "pending"


def test_a_claim_made_before_a_break_in_the_heartbeats_is_not_sent_after_it(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    """Claimed, then queued behind a hung send while the worker went unheard for 25 s
    (another worker took the lease meanwhile), then heard again: it is not sent."""
    request(database, "batch_a")
    own = database.own_heartbeats = OwnHeartbeats(timedelta(seconds=20))
    own.registered(clock.now(), others_heard=True)
    worker = make_worker(database, client, clock)
    (claim,) = CancelStore(database).claim_due("w1", now=clock.now(), limit=1, lease_seconds=120)
    run = worker._run()
    clock.advance(25)
    own.beat(clock.now())  # heard again: a new run of beats
    with pytest.raises(_NotSent):
        asyncio.run(worker._send(claim, run))
    assert api.calls[("cancel", "batch_a")] == 0
