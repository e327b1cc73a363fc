"""The cancel worker tells its story at INFO (issue #14): each cancel settled, a
periodic one-line summary, a cancel that failed for good at ERROR, each API error once."""

from __future__ import annotations

import logging
import threading

import pytest

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.processes.worker import CancelWorker
from tests.worker.fake_api import FakeApi, fail

from .conftest import T0
from .test_cancel_worker import make_worker


@pytest.fixture
def worker(database: Database, client: AsyncBatchApiClient, clock: ManualClock) -> CancelWorker:
    return make_worker(database, client, clock, summary_seconds=60.0)


def test_a_cancel_that_failed_for_good_is_an_error_and_each_404_is_logged_once(
    database: Database, api: FakeApi, worker: CancelWorker, caplog: pytest.LogCaptureFixture
) -> None:
    api.on_cancel("batch_ghost", fail(404, "No batch found"))
    api.on_retrieve("batch_ghost", fail(404, "No batch found"))
    CancelStore(database).request(["batch_ghost"], now=T0, requested_by="test", reason="r")
    with caplog.at_level(logging.INFO):
        worker.run(threading.Event(), once=True)
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
    database: Database, worker: CancelWorker, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    CancelStore(database).request(["batch_a", "batch_b"], now=T0, requested_by="test", reason="r")
    w = worker
    with caplog.at_level(logging.INFO):
        w.run(threading.Event(), once=True)
        assert not [r for r in caplog.records if getattr(r, "action", None) == "summary"]
        clock.advance(61)
        w.run(threading.Event(), once=True)
    lines = [r.getMessage() for r in caplog.records if getattr(r, "action", None) == "summary"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("worker: 0 due, 0 in flight; last 61s: 2 settled, 0 error(s)")
