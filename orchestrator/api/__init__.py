"""Talking to the OpenAI (or Azure OpenAI) Batch API."""

from __future__ import annotations

from orchestrator.api.client import ApiResult, ApiSettings, BatchApiClient, Download
from orchestrator.api.errors import (
    ApiAborted,
    ApiAnswerTooLarge,
    ApiAuthError,
    ApiCall,
    ApiNotFoundError,
    ApiProtocolError,
    ApiRejectedError,
    ApiStatusError,
    ApiTransportError,
    RetryLater,
)

__all__ = [
    "ApiAborted",
    "ApiAnswerTooLarge",
    "ApiAuthError",
    "ApiCall",
    "ApiNotFoundError",
    "ApiProtocolError",
    "ApiRejectedError",
    "ApiResult",
    "ApiSettings",
    "ApiStatusError",
    "ApiTransportError",
    "BatchApiClient",
    "Download",
    "RetryLater",
]
