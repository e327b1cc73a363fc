"""A real simulator on 127.0.0.1, a manual clock shared by it and the reconciler, and helpers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchResult
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.secret import Secret
from orchestrator.simulator import DEFAULT_API_KEY, Simulator, SimulatorConfig, SimulatorServer


@dataclass
class Sim:
    simulator: Simulator
    server: SimulatorServer

    def client(
        self, clock: ManualClock, *, key: str = DEFAULT_API_KEY, attempts: int = 2
    ) -> BatchApiClient:
        return make_client(self.server.url, clock, key=key, attempts=attempts)

    def async_client(
        self, clock: ManualClock, *, key: str = DEFAULT_API_KEY, attempts: int = 2
    ) -> AsyncBatchApiClient:
        return make_async_client(self.server.url, clock, key=key, attempts=attempts)


def make_async_client(
    base_url: str,
    clock: ManualClock,
    *,
    key: str = DEFAULT_API_KEY,
    attempts: int = 2,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncBatchApiClient:
    """The worker's client, as ``make_client``: waits between attempts are not slept."""

    async def no_sleep(_seconds: float) -> None:
        pass

    return AsyncBatchApiClient(
        ApiSettings(api_key=Secret(key), base_url=base_url),
        policy=RetryPolicy(max_in_process_attempts=attempts, max_in_process_wait=60.0),
        transport=transport,
        sleep=no_sleep,
        clock=clock,
    )


def make_client(
    base_url: str,
    clock: ManualClock,
    *,
    key: str = DEFAULT_API_KEY,
    attempts: int = 2,
    transport: httpx.BaseTransport | None = None,
) -> BatchApiClient:
    return BatchApiClient(
        ApiSettings(api_key=Secret(key), base_url=base_url),
        policy=RetryPolicy(max_in_process_attempts=attempts, max_in_process_wait=60.0),
        transport=transport,
        sleep=lambda _seconds: None,
        clock=clock,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> Iterator[Sim]:
    simulator = Simulator(SimulatorConfig(time_scale=1.0), clock)
    with SimulatorServer(simulator) as server:
        yield Sim(simulator, server)


ReconcilerFactory = Callable[..., Reconciler]


@pytest.fixture
def reconciler(database: Database, sim: Sim, clock: ManualClock) -> Iterator[ReconcilerFactory]:
    made: list[Reconciler] = []

    def make(
        owner: str = "reconciler-test",
        client: BatchApiClient | None = None,
        **config: Any,
    ) -> Reconciler:
        settings = ReconcilerConfig(**{"concurrency": 4, "chunk_lines": 100, **config})
        r = Reconciler(
            database,
            client or sim.client(clock),
            settings,
            clock,
            owner,
            random_unit=lambda: 0.0,
        )
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
        r.client.close()


def track(database: Database, clock: ManualClock, *batch_ids: str) -> None:
    BatchStore(database).track(list(batch_ids), now=clock.now(), source="track")


def harvest_done(database: Database, batch_id: str) -> bool:
    """Is the batch's harvest done? (A claim that finds nothing due is no proof that all
    is done: what the pass claimed before may still be at work.)"""
    with database.transaction() as session:
        return session.scalar(select(Batch.harvest_state).where(Batch.id == batch_id)) == "done"


def stored_outcomes(database: Database, batch_id: str) -> dict[str, str]:
    """custom_id -> the simulator's Outcome spelling, read back from our rows."""
    with database.transaction() as session:
        rows = session.execute(
            select(
                BatchResult.custom_id,
                BatchResult.file_kind,
                BatchResult.status_code,
                BatchResult.error_code,
            ).where(BatchResult.batch_id == batch_id)
        ).all()
    out: dict[str, str] = {}
    for custom_id, kind, status_code, error_code in rows:
        if kind == "output":
            assert status_code == 200
            out[custom_id] = "output"
        elif error_code is not None:
            out[custom_id] = f"error:{error_code}"
        else:
            out[custom_id] = f"error:{status_code}"
    return out


def expected_outcomes(simulator: Simulator, batch_id: str) -> dict[str, str]:
    return {k: v for k, v in simulator.truth(batch_id).items() if v != "missing"}


def summary_of(outcomes: dict[str, str]) -> Counter[str]:
    return Counter(outcomes.values())
