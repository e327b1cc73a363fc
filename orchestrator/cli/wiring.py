"""Composition: build the API clients, the shared request budget and a process's presence
(the reconciler's upkeep jobs: upkeep_wiring)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.budget import SendBudget
from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.clock import Clock
from orchestrator.core.request_budget import BudgetRule
from orchestrator.db.database import Database
from orchestrator.db.leases import ProcessRegistry
from orchestrator.db.request_budget import BudgetStore
from orchestrator.errors import ConfigError
from orchestrator.processes.config import retry_policy
from orchestrator.processes.presence import Presence
from orchestrator.processes.request_budget import SharedBudget
from orchestrator.settings import Settings


def api_settings(settings: Settings) -> ApiSettings:
    if not settings.api_key:
        raise ConfigError("OPENAI_API_KEY is not set: export the key the batches belong to")
    return ApiSettings(
        api_key=settings.api_key,
        base_url=settings.base_url,
        organization=settings.organization,
        project=settings.project,
        azure_api_version=settings.azure_api_version,
        connect_timeout=settings.api_connect_timeout,
        read_timeout=settings.api_read_timeout,
        deadline=settings.api_deadline,
        max_answer_bytes=settings.api_max_answer_bytes,
        download_min_bytes_per_second=settings.download_min_bytes_per_second,
        download_throughput_window=settings.download_throughput_window,
    )


def build_async_client(
    settings: Settings,
    *,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    clock: Clock | None = None,
    budget: SendBudget | None = None,
) -> AsyncBatchApiClient:
    """The worker's client: one connection per send in flight."""
    return AsyncBatchApiClient(
        api_settings(settings),
        policy=retry_policy(settings),
        max_connections=settings.worker_concurrency,
        wrap=wrap,
        clock=clock,
        budget=budget,
    )


def build_client(
    settings: Settings,
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Clock | None = None,  # for Retry-After dates: the database's in the processes
    budget: SendBudget | None = None,  # the processes': see shared_budget
) -> BatchApiClient:
    api = api_settings(settings)
    return BatchApiClient(
        api, policy=retry_policy(settings), transport=transport, clock=clock, budget=budget
    )


def shared_budget(settings: Settings, db: Database) -> SharedBudget | None:
    """The request budget every worker and reconciler on ``db`` shares, if one is set."""
    rate = settings.api_max_requests_per_second
    return None if rate is None else SharedBudget(BudgetStore(db), BudgetRule(rate))


def presence(settings: Settings, db: Database, owner: str, kind: str, clock: Clock) -> Presence:
    """The heartbeat of a worker or reconciler process (``with presence(...):``)."""
    return Presence(
        ProcessRegistry(db),
        owner,
        kind,
        clock,
        every=settings.process_heartbeat_seconds,
        stale_seconds=settings.process_stale_seconds,
    )
