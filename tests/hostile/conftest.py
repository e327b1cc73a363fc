"""A hostile server, a manual clock, and a worker and a reconciler pointed at the server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import BatchEvent
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from tests.hostile.server import HostileServer
from tests.integration.conftest import make_async_client, make_client

KEY = "sk-hostile-0123456789abcdef"
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@pytest.fixture
def client(hostile: HostileServer, clock: ManualClock) -> Iterator[BatchApiClient]:
    with make_client(hostile.url, clock, key=KEY, attempts=1) as made:
        yield made


@pytest.fixture
def worker_client(hostile: HostileServer, clock: ManualClock) -> AsyncBatchApiClient:
    return make_async_client(hostile.url, clock, key=KEY, attempts=1)


def make_worker(
    database: Database, client: AsyncBatchApiClient, clock: ManualClock
) -> CancelWorker:
    return CancelWorker(
        CancelStore(database),
        client,
        config=WorkerConfig(concurrency=2, idle_seconds=0.01),
        policy=RetryPolicy(max_in_process_attempts=1, max_in_process_wait=1.0),
        clock=clock,
        owner="hostile-worker",
        random_unit=lambda: 0.0,
    )


def make_reconciler(database: Database, client: BatchApiClient, clock: ManualClock) -> Reconciler:
    config = ReconcilerConfig(concurrency=2, chunk_lines=100)
    return Reconciler(
        database, client, config, clock, "hostile-reconciler", random_unit=lambda: 0.0
    )


def events(database: Database, batch_id: str, kind: str) -> list[str]:
    with database.transaction() as session:
        rows = session.scalars(
            select(BatchEvent.detail)
            .where(BatchEvent.batch_id == batch_id, BatchEvent.kind == kind)
            .order_by(BatchEvent.id)
        )
        return [row or "" for row in rows]
