"""The worker against the simulator, a real HTTP server on loopback, misbehaving on purpose."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings
from orchestrator.clock import SystemClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, CancelAttempt, CancelRequest
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from orchestrator.secret import Secret
from orchestrator.simulator import FaultRule, Scenario, Simulator, SimulatorConfig, SimulatorServer

KEY = "sk-sim-worker-test-key"
# Short waits so retries happen within a test; what matters is what is recorded.
POLICY = RetryPolicy(
    initial_delay=0.01, max_delay=0.05, max_in_process_attempts=3, max_in_process_wait=1.0
)


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimulatorConfig(api_key=KEY, seed=3), SystemClock())


@pytest.fixture
def server(sim: Simulator) -> Iterator[SimulatorServer]:
    with SimulatorServer(sim) as running:
        yield running


@pytest.fixture
def client(server: SimulatorServer) -> AsyncBatchApiClient:
    settings = ApiSettings(api_key=Secret(KEY), base_url=server.url, read_timeout=0.5)
    return AsyncBatchApiClient(settings, policy=POLICY)


def run_once(database: Database, client: AsyncBatchApiClient) -> None:
    worker = CancelWorker(
        CancelStore(database),
        client,
        config=WorkerConfig(concurrency=8, idle_seconds=0.01),
        policy=POLICY,
        clock=SystemClock(),
        owner="it-worker",
    )
    worker.run(threading.Event(), once=True)


def running_batch(sim: Simulator, **scenario: object) -> str:
    return sim.create_batch(20, Scenario().with_overrides(scenario), age_s=10)


def ask(database: Database, *ids: str) -> None:
    CancelStore(database).request(ids, now=SystemClock().now(), requested_by="it")


def request_row(database: Database, batch_id: str) -> CancelRequest:
    with database.transaction() as s:
        row = s.get(CancelRequest, batch_id)
        assert row is not None
        return row


def attempts(database: Database, batch_id: str) -> list[tuple[str, int | None]]:
    with database.transaction() as s:
        rows = s.scalars(
            select(CancelAttempt)
            .where(CancelAttempt.batch_id == batch_id)
            .order_by(CancelAttempt.attempt)
        )
        return [(a.outcome, a.http_status) for a in rows]


def test_a_plain_cancel_is_sent_once_and_recorded(
    database: Database, sim: Simulator, client: AsyncBatchApiClient
) -> None:
    batch_id = running_batch(sim)
    ask(database, batch_id)
    run_once(database, client)
    assert sim.served("cancel", batch_id) == 1
    assert request_row(database, batch_id).state == "accepted"
    with database.transaction() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == "cancelling"
        assert batch.cancelling_at is not None and batch.created_at is not None


@pytest.mark.parametrize(
    "fault",
    [
        FaultRule(kind="status", endpoint="cancel", status=429, retry_after_ms="20"),
        FaultRule(kind="status", endpoint="cancel", status=429, retry_after="0"),
        FaultRule(kind="status", endpoint="cancel", status=500),
        FaultRule(kind="status", endpoint="cancel", status=503),
        FaultRule(kind="html", endpoint="cancel", status=502),
        FaultRule(kind="drop_before", endpoint="cancel"),
        FaultRule(kind="drop_mid", endpoint="cancel"),
        FaultRule(kind="slow", endpoint="cancel", delay_s=1.0),
    ],
    ids=lambda f: f"{f.kind}-{f.status or f.delay_s or ''}",
)
def test_a_transient_fault_is_retried_and_the_cancel_lands(
    database: Database, sim: Simulator, client: AsyncBatchApiClient, fault: FaultRule
) -> None:
    batch_id = running_batch(sim)
    sim.add_fault(FaultRule(**{**fault.to_dict(), "batch_id": batch_id}))
    ask(database, batch_id)
    run_once(database, client)
    row = request_row(database, batch_id)
    assert row.state == "accepted", row.last_error
    assert row.attempts == 1  # one durable attempt; the client retried inside it
    assert sim.served("cancel", batch_id) == 2
    assert sim.counters()["max_concurrent_cancels"].get(batch_id, 0) <= 1 or fault.kind == "slow"


def test_a_long_retry_after_becomes_a_persisted_next_attempt(
    database: Database, sim: Simulator, client: AsyncBatchApiClient
) -> None:
    batch_id = running_batch(sim)
    sim.add_fault(
        FaultRule(
            kind="status", endpoint="cancel", batch_id=batch_id, status=429, retry_after="120"
        )
    )
    ask(database, batch_id)
    before = SystemClock().now()
    run_once(database, client)
    row = request_row(database, batch_id)
    assert row.state == "pending" and row.last_http_status == 429
    assert row.next_attempt_at is not None
    assert row.next_attempt_at - before >= timedelta(seconds=119)
    assert sim.served("cancel", batch_id) == 1
    run_once(database, client)  # not due: nothing sent
    assert sim.served("cancel", batch_id) == 1


def test_an_html_page_names_itself_in_the_error(
    database: Database, sim: Simulator, client: AsyncBatchApiClient
) -> None:
    batch_id = running_batch(sim)
    sim.add_fault(
        FaultRule(kind="html", endpoint="cancel", batch_id=batch_id, status=502, times=None)
    )
    ask(database, batch_id)
    run_once(database, client)
    row = request_row(database, batch_id)
    assert row.state == "pending" and row.last_http_status == 502
    assert row.last_error is not None and "502" in row.last_error


def test_cancel_of_a_completed_batch_is_too_late_and_harvest_goes_on(
    database: Database, sim: Simulator, client: AsyncBatchApiClient
) -> None:
    batch_id = sim.create_batch(5, Scenario(), age_s=10_000)  # long since completed
    ask(database, batch_id)
    run_once(database, client)
    row = request_row(database, batch_id)
    assert (row.state, row.outcome, row.last_http_status) == ("closed", "too_late:completed", 400)
    assert attempts(database, batch_id) == [("too_late", 400)]
    with database.transaction() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == "completed"
        assert batch.output_file_id  # the reconciler will harvest it


def test_an_unknown_batch_fails_clearly(
    database: Database, sim: Simulator, client: AsyncBatchApiClient
) -> None:
    ask(database, "batch_doesnotexist")
    run_once(database, client)
    row = request_row(database, "batch_doesnotexist")
    assert (row.state, row.outcome, row.last_http_status) == ("failed", "not_found", 404)
    assert row.last_error is not None and "not visible to this key" in row.last_error


def test_a_wrong_key_pauses_sending(
    database: Database, sim: Simulator, server: SimulatorServer
) -> None:
    batch_id = running_batch(sim)
    ask(database, batch_id)
    settings = ApiSettings(api_key=Secret("sk-wrong-key-1234"), base_url=server.url)
    wrong = AsyncBatchApiClient(settings, policy=POLICY)
    run_once(database, wrong)
    run_once(database, wrong)
    assert sim.served("cancel", batch_id) == 1
    assert CancelStore(database).active_pause(SystemClock().now()) is not None
    assert request_row(database, batch_id).state == "pending"
