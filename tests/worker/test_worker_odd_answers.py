"""A cancel's answer that cannot be believed, and a server that asks for almost no wait.

A 200 that is no Batch is not taken for accepted: the batch is asked (GET), as for an
answer about another batch. A Retry-After (or an in-process wait) shorter than our own
durable backoff never makes a cancel due again at once: a request that went out waits
at least the backoff (Retry-After means "no earlier than").
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from orchestrator.secret import Secret
from tests.worker.fake_api import SECRET, FakeApi, fail, ok
from tests.worker.test_cancel_worker import cancel_row, make_worker, request


def answer_200(body: object) -> Any:
    return lambda _request: httpx.Response(
        200, content=json.dumps(body), headers={"content-type": "application/json"}
    )


def test_a_200_that_is_no_batch_is_not_taken_for_accepted(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    """A gateway's error envelope with a 200 was recorded `accepted`: never sent again,
    and `cancel` again said "already requested"."""
    api.on_cancel("batch_x", answer_200({"error": {"message": "upstream unavailable"}}))
    api.on_retrieve("batch_x", ok("batch_x", "in_progress"))
    request(database, "batch_x")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    row = cancel_row(database, "batch_x")
    assert api.calls[("retrieve", "batch_x")] == 1  # asked
    assert row.state == "pending" and row.next_attempt_at is not None  # and sent again later


def test_a_200_that_is_no_batch_is_accepted_when_the_batch_says_cancelling(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    api.on_cancel("batch_y", answer_200({}))
    api.on_retrieve("batch_y", ok("batch_y", "cancelling"))
    request(database, "batch_y")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    assert cancel_row(database, "batch_y").state == "accepted"


def test_a_retry_after_of_a_millisecond_waits_the_durable_backoff(
    database: Database, api: FakeApi, client: AsyncBatchApiClient, clock: ManualClock
) -> None:
    """`retry-after-ms: 1` made the cancel due again 1 ms later, on every turn, for ever."""
    api.on_cancel("batch_h", fail(503, "busy", **{"retry-after-ms": "1"}))
    request(database, "batch_h")
    make_worker(database, client, clock).run(threading.Event(), once=True)
    row = cancel_row(database, "batch_h")
    assert row.next_attempt_at is not None and row.last_attempt_at is not None
    assert (row.next_attempt_at - row.last_attempt_at).total_seconds() >= 2.5  # 5 s, jittered


def test_no_in_process_wait_still_gets_the_durable_backoff(
    database: Database, api: FakeApi, clock: ManualClock
) -> None:
    """`retry_max_in_process_wait = 0`: every wait is too long to sleep, so the client's
    first backoff (0.5 s) came back as the delay, and a 503 was sent every 0.5 s."""
    policy = RetryPolicy(max_in_process_wait=0.0)

    async def no_sleep(_seconds: float) -> None:
        return None

    client = AsyncBatchApiClient(
        ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1"),
        policy=policy,
        transport=api.transport(),
        sleep=no_sleep,
        clock=clock,
        random=lambda: 0.0,
    )
    api.on_cancel("batch_z", fail(503, "busy"))  # no Retry-After
    request(database, "batch_z")
    gaps = []
    for _ in range(3):
        CancelWorker(
            CancelStore(database),
            client,
            WorkerConfig(concurrency=4, idle_seconds=0.01),
            policy=policy,
            clock=clock,
            owner="w1",
            random_unit=lambda: 0.0,
        ).run(threading.Event(), once=True)
        row = cancel_row(database, "batch_z")
        assert row.next_attempt_at is not None and row.last_attempt_at is not None
        gaps.append((row.next_attempt_at - row.last_attempt_at).total_seconds())
        clock.advance(gaps[-1])
    assert gaps == [5.0, 10.0, 20.0]
