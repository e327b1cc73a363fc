"""Fixtures for the cancel worker's tests: a manual clock, a scripted API, a client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.secret import Secret
from tests.worker.fake_api import SECRET, FakeApi

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_in_process_attempts=2, max_in_process_wait=5.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(api: FakeApi, clock: ManualClock, sleeps: list[float]) -> Iterator[AsyncBatchApiClient]:
    settings = ApiSettings(api_key=Secret(SECRET), base_url="https://api.test/v1")

    async def sleep(seconds: float) -> None:  # recorded, not slept
        sleeps.append(seconds)

    yield AsyncBatchApiClient(
        settings,
        policy=POLICY,
        transport=api.transport(),
        sleep=sleep,
        clock=clock,
        random=lambda: 0.0,
    )
