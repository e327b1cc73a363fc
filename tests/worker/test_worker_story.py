"""The cancel worker tells its story at INFO (issue #14): each cancel settled, a
periodic one-line summary, a cancel that failed for good at ERROR, each API error once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from orchestrator.secret import Secret
from tests.worker.fake_api import SECRET, FakeApi, fail
from tests.worker.test_cancel_worker import POLICY, T0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def client(api: FakeApi, clock: ManualClock) -> Iterator[BatchApiClient]:
    settings = ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1")
    with BatchApiClient(
        settings,
        policy=POLICY,
        transport=api.transport(),
        sleep=lambda _s: None,
        clock=clock,
        random=lambda: 0.0,
    ) as c:
        yield c


def worker(database: Database, client: BatchApiClient, clock: ManualClock) -> CancelWorker:
    return CancelWorker(
        CancelStore(database),
        client,
        config=WorkerConfig(concurrency=4, idle_seconds=0.01, summary_seconds=60.0),
        policy=POLICY,
        clock=clock,
        owner="w1",
        random_unit=lambda: 0.0,
    )


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def test_a_cancel_that_failed_for_good_is_an_error_and_each_404_is_logged_once(
    database: Database,
    api: FakeApi,
    client: BatchApiClient,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.on_cancel("batch_ghost", fail(404, "No batch found"))
    api.on_retrieve("batch_ghost", fail(404, "No batch found"))
    CancelStore(database).request(["batch_ghost"], now=T0, requested_by="test", reason="r")
    with caplog.at_level(logging.INFO):
        worker(database, client, clock).run(threading.Event(), once=True)
    failed = [r for r in caplog.records if getattr(r, "batch_id", None) == "batch_ghost"]
    final = [r for r in failed if r.levelno >= logging.ERROR]
    assert len(final) == 1, [r.getMessage() for r in failed]
    assert "failed for good" in final[0].getMessage()
    # Two calls answered 404 (the cancel, then the GET that checks): each said once, in
    # the one line that says what became of the cancel, not again by the client.
    said_404 = [
        r for r in caplog.records if r.name.startswith("orchestrator") and "404" in r.getMessage()
    ]
    assert len(said_404) == 1, [r.getMessage() for r in said_404]


def test_the_worker_logs_a_summary_line_at_each_interval(
    database: Database,
    api: FakeApi,
    client: BatchApiClient,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    CancelStore(database).request(["batch_a", "batch_b"], now=T0, requested_by="test", reason="r")
    w = worker(database, client, clock)
    with caplog.at_level(logging.INFO):
        w.run(threading.Event(), once=True)
        assert not [r for r in caplog.records if getattr(r, "action", None) == "summary"]
        clock.advance(61)
        w.run(threading.Event(), once=True)
    lines = [r.getMessage() for r in caplog.records if getattr(r, "action", None) == "summary"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("worker: 0 due, 0 in flight; last 61s: 2 settled, 0 error(s)")
