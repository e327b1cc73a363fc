"""One typed settings object, built at the edge and passed down.

Precedence, lowest first: built-in defaults, the config file (TOML; the
documented default is config/orchestrator.toml, another can be named with
ORCHESTRATOR_CONFIG), environment variables, command-line flags.

In the file, ``[worker] concurrency = 16`` sets ``worker_concurrency``; its
environment variable is ``ORCHESTRATOR_WORKER_CONCURRENCY``. The API settings
use the OpenAI client's names (OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_ORG_ID,
OPENAI_PROJECT_ID). The key is read from the environment only, never from the
file or a flag, and is held in a Secret that prints as ***.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import ConfigError
from orchestrator.secret import Secret

DEFAULT_CONFIG_FILE = Path(__file__).resolve().parents[1] / "config" / "orchestrator.toml"
ENV_NAMES = {
    "api_key": "OPENAI_API_KEY",
    "base_url": "OPENAI_BASE_URL",
    "organization": "OPENAI_ORG_ID",
    "project": "OPENAI_PROJECT_ID",
    "webhook_secret": "OPENAI_WEBHOOK_SECRET",
}
NOT_IN_FILE = frozenset({"api_key", "webhook_secret"})
UNKNOWN_BATCH_CHOICES = ("ignore", "adopt")


def default_database_url() -> str:
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{data_home / 'orchestrator' / 'orchestrator.sqlite3'}"


def _finite(name: str, value: float) -> None:
    # float("nan") passes every comparison below, and nan or inf seconds crash the
    # process later, deep in a timedelta: refuse them here, naming the setting.
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")


def _positive(name: str, value: float) -> None:
    _finite(name, value)
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0, got {value}")


def _not_negative(name: str, value: float) -> None:
    _finite(name, value)
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")


@dataclass(frozen=True, kw_only=True)
class Settings:
    # database
    database_url: str = field(default_factory=default_database_url)
    database_pool_size: int = 10
    # the Batch API
    api_key: Secret = field(default_factory=lambda: Secret(""))
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    azure_api_version: str | None = None  # set: Azure OpenAI mode (api-key header)
    api_connect_timeout: float = 5.0
    api_read_timeout: float = 30.0
    api_deadline: float = 60.0  # one JSON exchange, however slowly the server sends
    api_max_answer_bytes: int = 8 << 20  # a JSON answer, decompressed
    # retries, in process and durable
    retry_initial_delay: float = 0.5
    retry_max_delay: float = 8.0
    retry_in_process_attempts: int = 3
    retry_max_in_process_wait: float = 10.0
    retry_durable_initial: float = 5.0
    retry_durable_max: float = 900.0
    # the cancel worker
    worker_concurrency: int = 16
    worker_lease_seconds: float = 120.0
    worker_heartbeat_seconds: float = 20.0
    worker_idle_seconds: float = 1.0
    worker_auth_pause_seconds: float = 300.0
    # every long-running process: its row in `processes`, and when it counts as dead
    process_heartbeat_seconds: float = 5.0
    process_stale_seconds: float = 20.0
    # the reconciler
    reconcile_concurrency: int = 8
    reconcile_lease_seconds: float = 300.0
    reconcile_idle_seconds: float = 1.0
    poll_initial_seconds: float = 5.0
    poll_max_seconds: float = 300.0
    poll_cancelling_max_seconds: float = 30.0
    poll_backoff_factor: float = 1.5
    poll_error_max_seconds: float = 600.0
    overdue_cancelling_seconds: float = 600.0
    overdue_finalizing_seconds: float = 3600.0
    file_id_repolls: int = 3
    ingest_chunk_lines: int = 2000
    ingest_max_line_bytes: int = 16 << 20  # a longer result line is kept as a line error
    download_attempts: int = 5
    download_min_bytes_per_second: int = 10_000
    download_throughput_window: float = 60.0
    # running for months (docs/operators.md): both jobs are off unless set
    cleanup_result_files: bool = False  # delete output/error files once harvested and verified
    cleanup_input_files: bool = False  # and the input file too
    cleanup_every_seconds: float = 60.0
    retention_days: float | None = None  # set: the reconciler prunes rows of batches ended before
    retention_every_seconds: float = 3600.0
    # webhooks: the receiver, and the reconciler's polling while they flow
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))  # comma-separated
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8090
    webhook_max_body_bytes: int = 1_048_576
    webhook_tolerance_seconds: int = 300
    webhook_unknown_batches: str = "ignore"  # or "adopt": track a batch first heard of so
    webhook_silence_seconds: float = 900.0  # no event for this long: poll as without them
    poll_interval_with_webhooks: float = 3600.0
    # observability
    health_stale_seconds: float = 60.0  # /healthz fails when the loop has not turned for this long
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"  # this host only; "0.0.0.0" (all interfaces) on purpose

    def __post_init__(self) -> None:
        from orchestrator.db.engine import normalise_url  # late: keeps settings import-light

        normalise_url(self.database_url)
        _check_url("OPENAI_BASE_URL", self.base_url)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            lenient = ("file_id_", "metrics_", "webhook_port")
            check = _not_negative if f.name.startswith(lenient) else _positive
            check(env_name(f.name), value)
        _check_ranges(self)
        if self.process_heartbeat_seconds * 2 > self.process_stale_seconds:
            raise ConfigError(
                "ORCHESTRATOR_PROCESS_HEARTBEAT_SECONDS must be at most half of "
                f"ORCHESTRATOR_PROCESS_STALE_SECONDS ({self.process_stale_seconds:g}), got "
                f"{self.process_heartbeat_seconds:g}: a live process would look dead"
            )
        if self.metrics_port is not None and self.metrics_port > 65535:
            raise ConfigError(
                f"ORCHESTRATOR_METRICS_PORT must be a TCP port (0-65535), got {self.metrics_port}"
            )
        if self.webhook_port > 65535:
            raise ConfigError(
                f"ORCHESTRATOR_WEBHOOK_PORT must be a TCP port (0-65535), got {self.webhook_port}"
            )
        if self.webhook_unknown_batches not in UNKNOWN_BATCH_CHOICES:
            raise ConfigError(
                "ORCHESTRATOR_WEBHOOK_UNKNOWN_BATCHES must be ignore or adopt, not "
                f"{self.webhook_unknown_batches!r}"
            )
        if self.webhook_secret:
            from orchestrator.core.webhooks import parse_secrets  # late, like the url check

            try:
                parse_secrets(self.webhook_secret.reveal())
            except ValueError as exc:
                raise ConfigError(f"OPENAI_WEBHOOK_SECRET: {exc}") from None
        if self.log_format not in ("text", "json"):
            raise ConfigError(
                f"ORCHESTRATOR_LOG_FORMAT must be text or json, not {self.log_format!r}"
            )
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"ORCHESTRATOR_LOG_LEVEL: unknown level {self.log_level!r}")

    def redacted(self) -> dict[str, Any]:
        """Every setting, the key shown only as set or not, the database password as ***."""
        from sqlalchemy.engine import make_url  # late: keeps settings import-light

        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["api_key"] = "*** (set)" if self.api_key else "(not set)"
        out["webhook_secret"] = "*** (set)" if self.webhook_secret else "(not set)"
        out["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        return out

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# What the server sends is bounded by these; the ranges catch a unit slip (ms for s, KB for B).
_RANGES: dict[str, tuple[float, float]] = {
    "api_deadline": (0.1, 3600.0),
    "api_max_answer_bytes": (64 << 10, 1 << 30),
    "ingest_max_line_bytes": (64 << 10, 1 << 30),
    "download_min_bytes_per_second": (1, 1 << 30),
    "download_throughput_window": (1.0, 3600.0),
}


def _check_ranges(settings: Settings) -> None:
    for name, (low, high) in _RANGES.items():
        value = getattr(settings, name)
        if not low <= value <= high:
            raise ConfigError(f"{env_name(name)} must be between {low:g} and {high:g}, got {value}")


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{name} must be an http(s) URL like https://api.openai.com/v1, got {url!r}"
        )


def env_name(name: str) -> str:
    return ENV_NAMES.get(name, f"ORCHESTRATOR_{name.upper()}")


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(Settings)}


def _coerce(name: str, raw: Any, source: str) -> Any:
    kind = _field_types()[name]
    if raw is None or (isinstance(raw, str) and raw == "" and "None" in kind):
        return None
    try:
        if kind == "Secret":
            return Secret(str(raw))
        if kind == "bool":
            return _bool(raw)
        if kind.startswith("int"):
            if isinstance(raw, float | bool):
                raise ValueError
            return int(raw)
        if kind.startswith("float"):
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return str(raw)
    except ValueError:
        shown = "***" if kind == "Secret" else repr(raw)
        expected = kind.split(" ")[0]
        raise ConfigError(f"{source}: expected {expected}, got {shown}") from None


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _flatten(table: Mapping[str, Any], path: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            for inner, inner_value in value.items():
                flat[f"{key}_{inner}"] = inner_value
        else:
            flat[key] = value
    known = _field_types()
    for key in flat:
        if key not in known or key in NOT_IN_FILE:
            why = f"read from {ENV_NAMES[key]} only" if key in NOT_IN_FILE else "unknown"
            raise ConfigError(f"{path}: setting {key!r} is not allowed ({why})")
    return flat


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"ORCHESTRATOR_CONFIG: no such file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return _flatten(table, str(path))


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then the file, then the environment, then flags (``overrides``)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    named = environ.get("ORCHESTRATOR_CONFIG")
    path = Path(named) if named else DEFAULT_CONFIG_FILE
    if named or path.exists():
        for key, raw in read_config_file(path).items():
            values[key] = _coerce(key, raw, f"{path}: {key}")
    for name in _field_types():
        env = env_name(name)
        if env in environ:
            values[name] = _coerce(name, environ[env], env)
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(name, raw, f"--{name.replace('_', '-')}")
    return Settings(**values)
