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
import stat
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


MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MAX_CONFIG_BYTES = 1 << 20  # a settings file is a few hundred bytes; this is not one


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: `low` (or, when `above`, anything
    greater than it) up to `high`. Bounded above too: a lease of 1e300 seconds
    would crash the process later, deep in a timedelta."""

    low: float
    high: float
    above: bool = False  # `low` itself is not allowed
    meaning: str = ""  # what the value is, for the message

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):  # nan passes every comparison
            return False
        return (value > self.low if self.above else value >= self.low) and value <= self.high

    def describe(self) -> str:
        low = f"greater than {self.low:g}" if self.above else f"at least {self.low:g}"
        text = f"{low} and at most {self.high:g}"
        return f"{self.meaning} ({text})" if self.meaning else text


def _within(
    default: Any, low: float, high: float, *, above: bool = False, meaning: str = ""
) -> Any:
    """A numeric setting's default and its Range (see `Settings.__post_init__`)."""
    return field(default=default, metadata={"range": Range(low, high, above, meaning)})


def _seconds(default: float, high: float, *, low: float = 0.0, above: bool = True) -> Any:
    return _within(default, low, high, above=above)


# (smaller, larger, strictly, why): each pair must hold between two settings' values.
RELATIONS = (
    ("retry_initial_delay", "retry_max_delay", False, "the first retry waits at most the longest"),
    ("retry_durable_initial", "retry_durable_max", False, "the first wait is at most the longest"),
    (
        "worker_heartbeat_seconds",
        "worker_lease_seconds",
        True,
        "a lease would run out between two heartbeats and another worker take the batch",
    ),
    ("poll_initial_seconds", "poll_max_seconds", False, "the first wait is at most the longest"),
    (
        "poll_cancelling_max_seconds",
        "poll_max_seconds",
        False,
        "a cancelling batch is polled at least as often as others",
    ),
    (
        "process_heartbeat_seconds",
        "process_stale_seconds",
        True,
        "a live process would look dead (and at most a third of it, checked below)",
    ),
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    # database
    database_url: str = field(default_factory=default_database_url)
    database_pool_size: int = _within(10, 1, 1000)
    # the Batch API
    api_key: Secret = field(default_factory=lambda: Secret(""))
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    azure_api_version: str | None = None  # set: Azure OpenAI mode (api-key header)
    api_connect_timeout: float = _seconds(5.0, 10 * MINUTE)
    api_read_timeout: float = _seconds(30.0, HOUR)
    # one JSON exchange, however slowly the server sends
    api_deadline: float = _within(60.0, 0.1, HOUR)
    # a JSON answer, decompressed; the ranges of the byte limits catch a unit slip (KB for B)
    api_max_answer_bytes: int = _within(8 << 20, 64 << 10, 1 << 30)
    # set: every worker and reconciler sharing the database sends at most this many
    # requests a second together, and a 429 any of them gets holds them all back
    api_max_requests_per_second: float | None = _within(None, 0.0, 100_000.0, above=True)
    # retries, in process and durable
    retry_initial_delay: float = _seconds(0.5, HOUR)
    retry_max_delay: float = _seconds(8.0, HOUR)
    retry_in_process_attempts: int = _within(3, 1, 100)
    retry_max_in_process_wait: float = _seconds(10.0, HOUR, above=False)
    retry_durable_initial: float = _seconds(5.0, DAY)
    retry_durable_max: float = _seconds(900.0, 7 * DAY)
    # the cancel worker
    worker_concurrency: int = _within(16, 1, 1024)
    worker_lease_seconds: float = _seconds(120.0, DAY)
    worker_heartbeat_seconds: float = _seconds(20.0, DAY)
    worker_idle_seconds: float = _seconds(1.0, HOUR)
    worker_auth_pause_seconds: float = _seconds(300.0, 7 * DAY)
    # every long-running process: its row in `processes`, and when it counts as dead
    log_summary_seconds: float = _seconds(60.0, DAY, above=False)  # 0: no summary lines
    process_heartbeat_seconds: float = _seconds(5.0, HOUR)
    process_stale_seconds: float = _seconds(20.0, 2 * HOUR)
    # the reconciler
    reconcile_concurrency: int = _within(8, 1, 1024)
    reconcile_lease_seconds: float = _seconds(300.0, DAY)
    reconcile_idle_seconds: float = _seconds(1.0, HOUR)
    # with this many in-flight batches tracked, observe them through list pages (100 a
    # request) before single GETs; 0: single GETs only
    reconcile_list_min_tracked: int = _within(50, 0, 1_000_000)
    # a long walk of the list is cut into segments (at ids of batches we track); this
    # many are fetched at once by each reconciler
    reconcile_list_concurrency: int = _within(4, 1, 64)
    poll_initial_seconds: float = _seconds(5.0, DAY)
    poll_max_seconds: float = _seconds(300.0, 7 * DAY)
    poll_cancelling_max_seconds: float = _seconds(30.0, DAY)
    poll_backoff_factor: float = _within(1.5, 1.0, 100.0)
    poll_error_max_seconds: float = _seconds(600.0, 7 * DAY)
    overdue_cancelling_seconds: float = _seconds(600.0, 30 * DAY)
    overdue_finalizing_seconds: float = _seconds(3600.0, 30 * DAY)
    file_id_repolls: int = _within(3, 0, 100)
    ingest_chunk_lines: int = _within(2000, 1, 1_000_000)
    # a longer result line is kept as a line error
    ingest_max_line_bytes: int = _within(16 << 20, 64 << 10, 1 << 30)
    download_attempts: int = _within(5, 1, 100)
    download_min_bytes_per_second: int = _within(10_000, 1, 1 << 30)
    download_throughput_window: float = _within(60.0, 1.0, HOUR)
    # running for months (docs/operators.md): both jobs are off unless set
    cleanup_result_files: bool = False  # delete output/error files once harvested and verified
    cleanup_input_files: bool = False  # and the input file too
    cleanup_every_seconds: float = _seconds(60.0, DAY)
    # set: the reconciler prunes rows of batches ended before
    retention_days: float | None = _within(None, 0.0, 36500.0, above=True)
    retention_every_seconds: float = _seconds(3600.0, 7 * DAY)
    # webhooks: the receiver, and the reconciler's polling while they flow
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))  # comma-separated
    webhook_host: str = "127.0.0.1"
    webhook_port: int = _within(8090, 0, 65535, meaning="a TCP port")
    webhook_max_body_bytes: int = _within(1_048_576, 1024, 64 << 20)
    webhook_tolerance_seconds: int = _within(300, 1, HOUR)
    webhook_unknown_batches: str = "ignore"  # or "adopt": track a batch first heard of so
    # no event for this long: poll as without them
    webhook_silence_seconds: float = _seconds(900.0, DAY)
    poll_interval_with_webhooks: float = _seconds(3600.0, 7 * DAY)
    # observability
    # /healthz fails when the loop has not turned for this long
    health_stale_seconds: float = _seconds(60.0, DAY)
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_port: int | None = _within(None, 0, 65535, meaning="a TCP port")
    metrics_address: str = "127.0.0.1"  # this host only; "0.0.0.0" (all interfaces) on purpose

    def __post_init__(self) -> None:
        from orchestrator.db.urls import check_database_url  # late: keeps settings light

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                _check_text(env_name(f.name), value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                limits = f.metadata.get("range")
                if limits is None:  # tests/unit/test_settings_ranges.py keeps this unreachable
                    raise ConfigError(f"{env_name(f.name)} has no allowed range")
                if not limits.admits(value):
                    raise ConfigError(
                        f"{env_name(f.name)} must be {limits.describe()}, got {value}"
                    )
        for smaller, larger, strictly, why in RELATIONS:
            low, high = getattr(self, smaller), getattr(self, larger)
            if low > high or (strictly and low == high):
                must = "less than" if strictly else "at most"
                raise ConfigError(
                    f"{env_name(smaller)} ({low:g}) must be {must} {env_name(larger)} "
                    f"({high:g}): {why}"
                )
        check_database_url(self.database_url)
        _check_base_url(self.base_url)
        self._check_choices()

    def _check_choices(self) -> None:
        """Settings that name one of a few choices, must parse, or depend on another."""
        # A third: beats land a little more than their interval apart, and a gap over
        # half the stale time breaks a process's run of beats (core/liveness.py): at a
        # half, no process would ever be sure another is dead.
        if self.process_heartbeat_seconds * 3 > self.process_stale_seconds:
            raise ConfigError(
                "ORCHESTRATOR_PROCESS_HEARTBEAT_SECONDS must be at most a third of "
                f"ORCHESTRATOR_PROCESS_STALE_SECONDS ({self.process_stale_seconds:g}), got "
                f"{self.process_heartbeat_seconds:g}: a live process would look dead, or "
                "none could tell a dead one"
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

    def __repr__(self) -> str:
        # The dataclass's own repr would show the database URL's password (a traceback's
        # locals, a debug line): what `config show` shows instead.
        shown = ", ".join(f"{name}={value!r}" for name, value in self.redacted().items())
        return f"Settings({shown})"

    def redacted(self) -> dict[str, Any]:
        """Every setting, the key shown only as set or not, the database password as ***."""
        from orchestrator.db.urls import hide_password  # late: keeps settings light

        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["api_key"] = "*** (set)" if self.api_key else "(not set)"
        out["webhook_secret"] = "*** (set)" if self.webhook_secret else "(not set)"
        out["database_url"] = hide_password(self.database_url)  # and `?password=`, as typed
        return out

    def secrets(self) -> tuple[Secret, ...]:
        """What no log line may show: the key, the database's password, and each webhook
        secret (the whole comma-separated list and every piece of it)."""
        from orchestrator.db.urls import database_passwords  # late: keeps settings light

        hooks = self.webhook_secret.reveal()
        pieces = [hooks, *(piece.strip() for piece in hooks.split(","))]
        return (
            self.api_key,
            *(Secret(password) for password in database_passwords(self.database_url)),
            *(Secret(piece) for piece in pieces if piece),
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _check_text(name: str, value: str) -> None:
    """No setting holds a control character (an environment variable with a newline
    would make a SQLite file named `x\\n` or a header httpx refuses) or bytes that
    are not UTF-8 (they come in as lone surrogates and crash the first write)."""
    from orchestrator.core.visible import visible
    from orchestrator.db.urls import hide_password

    if visible(value) != value:
        raise ConfigError(
            f"{name} holds control characters or bytes that are not UTF-8: "
            f"'{visible(hide_password(value))}'"
        )


def _check_base_url(url: str) -> None:
    from orchestrator.db.urls import hide_password

    name, shown = "OPENAI_BASE_URL", hide_password(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parses the port: out of range or not a number raises)
    except ValueError as exc:
        raise ConfigError(f"{name} is not a URL ({exc}): {shown!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name} must be an http(s) URL like https://api.openai.com/v1, got {shown!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{name} must not hold a user name or password (httpx would send them as "
            f"Basic auth instead of the API key): {shown!r}"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{name} must have no ?query or #fragment, got {shown!r}")


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
        if not isinstance(raw, str):  # a TOML number, list or table where text belongs
            raise ValueError
        return raw
    # TypeError: a TOML list or table for a number; OverflowError: a TOML integer too
    # large for a float (`1e400` as digits)
    except (ValueError, TypeError, OverflowError):
        shown = "***" if kind == "Secret" else _shorten(repr(raw))
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


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings, flattened; ConfigError naming the file for anything that is
    not a small UTF-8 TOML file (a directory, a FIFO that would block, 1 GB of text)."""
    try:
        mode = path.stat().st_mode
        # A directory cannot be read, a FIFO would block; /dev/null ("no settings") is fine.
        if stat.S_ISDIR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise ConfigError(f"ORCHESTRATOR_CONFIG: {path} is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"ORCHESTRATOR_CONFIG: {path} is over {MAX_CONFIG_BYTES:,} bytes; a settings "
                "file is a few hundred"
            )
    except FileNotFoundError:
        raise ConfigError(f"ORCHESTRATOR_CONFIG: no such file {path}") from None
    except OSError as exc:
        raise ConfigError(f"ORCHESTRATOR_CONFIG: {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 (line {line})") from None
    try:
        table = tomllib.loads(text)
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
