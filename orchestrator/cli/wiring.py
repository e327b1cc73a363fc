"""Composition: build the API client and its retry policy from the settings."""

from __future__ import annotations

import httpx

from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        initial_delay=settings.retry_initial_delay,
        max_delay=settings.retry_max_delay,
        max_in_process_attempts=settings.retry_in_process_attempts,
        max_in_process_wait=settings.retry_max_in_process_wait,
        durable_initial=settings.retry_durable_initial,
        durable_max=settings.retry_durable_max,
    )


def build_client(
    settings: Settings, *, transport: httpx.BaseTransport | None = None
) -> BatchApiClient:
    if not settings.api_key:
        raise ConfigError("OPENAI_API_KEY is not set: export the key the batches belong to")
    api = ApiSettings(
        api_key=settings.api_key,
        base_url=settings.base_url,
        organization=settings.organization,
        project=settings.project,
        azure_api_version=settings.azure_api_version,
        connect_timeout=settings.api_connect_timeout,
        read_timeout=settings.api_read_timeout,
    )
    return BatchApiClient(api, policy=retry_policy(settings), transport=transport)
