"""Settings of one simulator instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .scenario import Scenario

DEFAULT_API_KEY = "sk-sim-local"
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
BATCH_ENDPOINTS: frozenset[str] = frozenset(
    {
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
        # Azure spells them without the version prefix.
        "/chat/completions",
        "/embeddings",
        "/completions",
        "/responses",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    api_key: str = DEFAULT_API_KEY
    time_scale: float = 1.0
    """Scenario durations are divided by this (600: the 24 h expiry takes 144 real seconds)."""
    scenario: Scenario = field(default_factory=Scenario)
    """Defaults for every batch; per-batch overrides replace single fields."""
    seed: int | None = None
    """Seeds batch/file ids and probabilistic faults; None draws from OS entropy, so a
    restarted simulator never hands out an id an earlier run already used."""
    cancel_terminal_status: int = 400
    """HTTP status of a cancel on a completed/failed/expired batch."""
    model: str = DEFAULT_MODEL
    endpoint: str = "/v1/chat/completions"
    verbose: bool = False
    """Log every request to stderr."""
    webhook_urls: tuple[str, ...] = ()
    """Where to POST signed ``batch.*`` events when a batch ends (none: no webhooks)."""
    webhook_secret: str = field(default="", repr=False)
    """The ``whsec_...`` secret to sign them with (the receiver's OPENAI_WEBHOOK_SECRET)."""
    webhook_attempts: int = 8
    """Deliveries of one event to one URL until a 2xx, the first included."""
    webhook_retry_s: float = 1.0
    """Real seconds before the first redelivery, doubling after each."""
    rate_limit_per_second: float | None = None
    """Rate-limit mode: each key may send this many API requests a second (a token
    bucket); past it, 429 with ``retry-after``/``retry-after-ms``. None: no limit."""
    rate_limit_burst: float | None = None
    """The bucket's size (default: one second's worth, at least 1)."""
    webhook_thread: bool = True
    """Send from a thread while the server runs; False: the caller calls ``webhooks.pump()``."""

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError("time_scale must be > 0")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if not 400 <= self.cancel_terminal_status <= 499:
            raise ValueError("cancel_terminal_status must be a 4xx status")
        for url in self.webhook_urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise ValueError(f"webhook URL must be http(s)://host/path, got {url!r}")
        if self.webhook_urls and not self.webhook_secret:
            raise ValueError("webhook URLs need a webhook secret (whsec_...)")
        if self.webhook_attempts < 1 or not self.webhook_retry_s >= 0:
            raise ValueError("webhook_attempts must be >= 1 and webhook_retry_s >= 0")
