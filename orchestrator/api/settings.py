"""How to reach the Batch API, and how much of it to put up with."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from orchestrator.errors import ConfigError
from orchestrator.secret import Secret

__all__ = ["DEFAULT_BASE_URL", "ApiSettings"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """How to reach the API. ``azure_api_version`` set means Azure OpenAI mode:
    ``api-key`` header instead of ``Authorization: Bearer``, and ``api-version``
    added to every query. Paths are relative to ``base_url`` in both modes."""

    api_key: Secret
    base_url: str = DEFAULT_BASE_URL
    organization: str | None = None
    project: str | None = None
    azure_api_version: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    deadline: float = 60.0  # a JSON call's whole exchange, per attempt
    max_answer_bytes: int = 8 << 20  # a JSON answer, decoded
    download_min_bytes_per_second: int = 10_000
    download_throughput_window: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, Secret) or not self.api_key:
            raise ConfigError("api_key: must be a non-empty Secret")
        if _HEADER_SAFE.fullmatch(self.api_key.reveal()) is None:
            # never show it: say only what is wrong
            raise ConfigError("api_key: contains spaces or characters not allowed in a header")
        if not self.base_url.startswith(("https://", "http://")):
            raise ConfigError(
                f"base_url: must start with https:// or http://, got {self.base_url!r}"
            )
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        for name in ("organization", "project", "azure_api_version"):
            value = getattr(self, name)
            if value == "":  # an empty environment variable means "not set"
                object.__setattr__(self, name, None)
            elif value is not None and _HEADER_SAFE.fullmatch(value) is None:
                raise ConfigError(f"{name}: {value!r} has characters not allowed in a header")
        for name in (
            "connect_timeout",
            "read_timeout",
            "deadline",
            "max_answer_bytes",
            "download_min_bytes_per_second",
            "download_throughput_window",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be > 0, got {value!r}")

    def headers(self, user_agent: str, accept_encoding: str) -> dict[str, str]:
        """Every request's headers, the key among them (never logged)."""
        headers = {
            "User-Agent": user_agent,
            "Accept": "application/json",
            "Accept-Encoding": accept_encoding,
        }
        if self.is_azure:
            headers["api-key"] = self.api_key.reveal()
        else:
            headers["Authorization"] = f"Bearer {self.api_key.reveal()}"
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return headers

    @property
    def is_azure(self) -> bool:
        return self.azure_api_version is not None
