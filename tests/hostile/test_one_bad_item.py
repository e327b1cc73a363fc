"""No single batch, cancel, file or line stops a process: it is recorded on that item,
backed off, and the process goes on with the rest."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiResult, BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.harvest import FileState
from orchestrator.db.batches import BatchStore, plan_batch_write
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchResult, CancelRequest
from orchestrator.db.polls import PollStore
from orchestrator.db.results import ResultStore
from orchestrator.errors import DatabaseUnavailable
from orchestrator.processes.ingest import FileIngest, IngestSettings
from tests.hostile.conftest import events, make_reconciler, make_worker
from tests.hostile.server import Answer, HostileServer, batch_object

GOOD, BAD = "batch_good", "batch_bad"


def row(database: Database, model: type[Any], key: str) -> Any:
    with database.transaction() as session:
        found = session.get(model, key)
        assert found is not None
        return found


def test_an_unexpected_error_on_one_batch_is_recorded_and_the_pass_goes_on(
    database: Database, hostile: HostileServer, client: BatchApiClient, clock: ManualClock
) -> None:
    BatchStore(database).track([BAD, GOOD], now=clock.now(), source="track")
    hostile.script("GET", f"/v1/batches/{GOOD}", Answer(body=batch_object(GOOD)))
    real = client.retrieve

    def retrieve(batch_id: str) -> ApiResult:
        if batch_id == BAD:
            raise RuntimeError("a bug nobody foresaw")
        return real(batch_id)

    client.retrieve = retrieve  # type: ignore[method-assign]
    with make_reconciler(database, client, clock) as reconciler:
        summary = reconciler.run_once()

    assert summary.polled == 1 and summary.needs_attention
    assert row(database, Batch, GOOD).status == "in_progress"
    bad = row(database, Batch, BAD)
    assert "RuntimeError: a bug nobody foresaw" in (bad.last_error or "")
    assert bad.next_poll_at is not None and bad.next_poll_at > clock.now()  # backed off
    assert bad.lease_owner is None
    assert events(database, BAD, "unexpected_error")


def test_an_unexpected_error_sending_one_cancel_is_recorded_and_the_worker_goes_on(
    database: Database,
    hostile: HostileServer,
    worker_client: AsyncBatchApiClient,
    clock: ManualClock,
) -> None:
    hostile.script(
        "POST", f"/v1/batches/{GOOD}/cancel", Answer(body=batch_object(GOOD, "cancelling"))
    )
    CancelStore(database).request([BAD, GOOD], now=clock.now(), requested_by="test")
    real = worker_client.cancel

    async def cancel(batch_id: str, *, may_retry: Callable[[], bool] | None = None) -> ApiResult:
        if batch_id == BAD:
            raise KeyError("surprise")
        return await real(batch_id, may_retry=may_retry)

    worker_client.cancel = cancel  # type: ignore[method-assign]
    make_worker(database, worker_client, clock).run(threading.Event(), once=True)

    assert row(database, CancelRequest, GOOD).state == "accepted"
    bad = row(database, CancelRequest, BAD)
    assert bad.state == "pending" and "KeyError" in (bad.last_error or "")
    assert bad.next_attempt_at > clock.now()
    assert events(database, BAD, "unexpected_error")


def test_a_cancel_whose_recording_crashes_is_not_sent_again_hot(
    database: Database,
    hostile: HostileServer,
    worker_client: AsyncBatchApiClient,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for batch_id in (BAD, GOOD):
        answer = Answer(body=batch_object(batch_id, "cancelling"))
        hostile.script("POST", f"/v1/batches/{batch_id}/cancel", answer)
    CancelStore(database).request([BAD, GOOD], now=clock.now(), requested_by="test")
    real = plan_batch_write

    def plan(row: Any, observed: Any, **kwargs: Any) -> Any:
        if observed.id == BAD:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(row, observed, **kwargs)

    monkeypatch.setattr("orchestrator.db.cancels.plan_batch_write", plan)
    worker = make_worker(database, worker_client, clock)
    worker.run(threading.Event(), once=True)
    worker.run(threading.Event(), once=True)  # nothing is due again yet

    assert hostile.calls[("POST", f"/v1/batches/{BAD}/cancel")] == 1
    assert row(database, CancelRequest, GOOD).state == "accepted"
    bad = row(database, CancelRequest, BAD)
    assert bad.state == "pending" and "OverflowError" in (bad.last_error or "")
    assert bad.next_attempt_at > clock.now() and bad.lease_owner is None
    assert events(database, BAD, "unexpected_error")


class _CountingStop(threading.Event):
    """A stop event whose waits return at once, counting them; set after `limit` waits."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


class _DownStore(CancelStore):
    def claim_due(self, owner: str, *, now: datetime, limit: int, lease_seconds: float) -> Any:
        raise DatabaseUnavailable("database unavailable: connection refused")


def test_a_long_database_outage_never_overflows_the_worker_backoff(
    database: Database, worker_client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    worker = make_worker(database, worker_client, clock)
    worker.store = _DownStore(database)
    stop = _CountingStop(limit=1500)  # past 1,024 failures, where 2**n overflowed a float
    worker.run(stop)
    assert worker.report.db_outages == 1500
    assert max(stop.waits) == worker.config.db_retry_max_seconds
    from orchestrator.core.retry_policy import outage_backoff

    assert outage_backoff(10**9, initial=0.5, cap=30.0) == 30.0


def test_a_result_line_with_an_absurd_status_code_is_stored_without_it(
    database: Database, hostile: HostileServer, client: BatchApiClient, clock: ManualClock
) -> None:
    BatchStore(database).track([GOOD], now=clock.now(), source="track")
    PollStore(database).claim_due(now=clock.now(), owner="lines", lease_seconds=60, limit=1)
    lines = [
        b'{"custom_id": "a", "response": {"status_code": 18446744073709551615, "body": {}}}',
        b'{"custom_id": "b", "response": {"status_code": 200, "body": {}}}',
    ]
    hostile.script("GET", "/v1/files/file-lines/content", Answer(body=b"\n".join(lines) + b"\n"))
    ingest = FileIngest(
        client=client,
        results=ResultStore(database),
        clock=clock,
        owner="lines",
        settings=IngestSettings(),
    )
    outcome = ingest.run(batch_id=GOOD, file_id="file-lines", kind="output")
    assert outcome.state is FileState.DONE and outcome.inserted == 2
    with database.transaction() as session:
        codes = dict(
            session.query(BatchResult.custom_id, BatchResult.status_code).filter_by(batch_id=GOOD)
        )
    assert codes == {"a": None, "b": 200}
