"""Fault rules: what to break, for which requests, how often.

A rule matches an endpoint (or ``*``) and optionally one batch or file id. It fires
for the next ``times`` matching requests (``None``: without limit), each with
``probability`` when given (drawn from the simulator's seeded RNG). The first rule
in insertion order that fires wins.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

FaultKind = Literal[
    "status",
    "html",
    "slow",
    "drop_before",
    "drop_mid",
    "truncate",
    # webhook deliveries only (endpoint "webhook"): see simulator/webhooks.py
    "bad_signature",
    "duplicate",
    "late",
    "unknown_batch",
    "drop",
    "lose",
    "reorder",
    "forge",
]
WEBHOOK_KINDS: frozenset[str] = frozenset(
    {"bad_signature", "duplicate", "late", "unknown_batch", "drop", "lose", "reorder", "forge"}
)
FAULT_KINDS: frozenset[str] = (
    frozenset({"status", "html", "slow", "drop_before", "drop_mid", "truncate"}) | WEBHOOK_KINDS
)
ENDPOINTS: frozenset[str] = frozenset(
    {
        "retrieve",
        "cancel",
        "list",
        "content",
        "create_batch",
        "create_file",
        "retrieve_file",
        "delete_file",
        "webhook",
    }
)
# Kinds for which the server still does the work of the request.
PROCESSING_KINDS: frozenset[str] = frozenset({"slow", "drop_mid", "truncate"})

_OPTIONAL_STR = ("batch_id", "file_id", "message", "error_type", "error_code")


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """One fault to inject. See docs/simulator.md for the semantics of each kind."""

    kind: FaultKind
    endpoint: str = "*"
    batch_id: str | None = None
    file_id: str | None = None
    status: int | None = None
    """HTTP status for ``status`` (default 500) and ``html`` (default 502)."""
    retry_after: str | None = None
    retry_after_ms: str | None = None
    should_retry: bool | None = None
    delay_s: float = 0.0
    fraction: float = 0.5
    """``drop_mid``/``truncate``: the share of the body sent before closing."""
    times: int | None = 1
    """How many matching requests it fires for; None = unlimited (usual with probability)."""
    probability: float | None = None
    message: str | None = None
    error_type: str | None = None
    error_code: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {sorted(FAULT_KINDS)}, got {self.kind!r}")
        if self.endpoint != "*" and self.endpoint not in ENDPOINTS:
            raise ValueError(f"fault endpoint must be '*' or one of {sorted(ENDPOINTS)}")
        if (self.kind in WEBHOOK_KINDS) != (self.endpoint == "webhook"):
            raise ValueError(
                f"webhook faults ({', '.join(sorted(WEBHOOK_KINDS))}) go with endpoint "
                "'webhook', and only they do"
            )
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError("fault status must be an HTTP status code")
        if self.times is not None and self.times < 1:
            raise ValueError("fault times must be >= 1 or null")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("fault probability must be within 0..1")
        if self.delay_s < 0 or not 0.0 <= self.fraction <= 1.0:
            raise ValueError("fault delay_s must be >= 0 and fraction within 0..1")

    @property
    def http_status(self) -> int:
        if self.status is not None:
            return self.status
        return 502 if self.kind == "html" else 500

    @property
    def processes_request(self) -> bool:
        """Whether the server does the work of a request hit by this fault."""
        return self.kind in PROCESSING_KINDS

    def matches(self, endpoint: str, batch_id: str | None, file_id: str | None) -> bool:
        if self.endpoint != endpoint and (self.endpoint != "*" or endpoint == "webhook"):
            return False
        if self.batch_id is not None and self.batch_id != batch_id:
            return False
        return self.file_id is None or self.file_id == file_id

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FaultRule:
        """Build a rule from JSON. Without ``times``, a probability rule is unlimited."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        kwargs: dict[str, Any] = {"kind": _text(data, "kind", required=True)}
        for name in ("endpoint", *_OPTIONAL_STR):
            if name in data:
                kwargs[name] = _text(data, name)
        for name in ("retry_after", "retry_after_ms"):
            if data.get(name) is not None:
                kwargs[name] = _header_value(data[name], name)
        for name in ("status", "times"):
            if name in data:
                kwargs[name] = _optional_int(data[name], name)
        for name in ("delay_s", "fraction", "probability"):
            if data.get(name) is not None:
                kwargs[name] = _number(data[name], name)
        kwargs["should_retry"] = _optional_bool(data.get("should_retry"), "should_retry")
        if "probability" in data and "times" not in data:
            kwargs["times"] = None
        return cls(**kwargs)


def _text(data: Mapping[str, object], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"fault {name} must be a string")
    return value


def _header_value(value: object, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"fault {name} must be a string or a number")
    return str(value)


def _optional_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"fault {name} must be an integer or null")
    return value


def _optional_bool(value: object, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"fault {name} must be a boolean or null")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"fault {name} must be a number")
    return float(value)


def rules_from_json(data: object) -> list[FaultRule]:
    """One rule object, a list of them, or ``{"faults": [...]}``."""
    if isinstance(data, Mapping) and "faults" in data:
        data = data["faults"]
    if isinstance(data, Mapping):
        return [FaultRule.from_dict(data)]
    if isinstance(data, list):
        rules: list[FaultRule] = []
        for item in data:
            if not isinstance(item, Mapping):
                raise ValueError("each fault must be a JSON object")
            rules.append(FaultRule.from_dict(item))
        return rules
    raise ValueError("faults must be a JSON object or a list of objects")


def load_faults(path: Path) -> list[FaultRule]:
    """Read fault rules from a JSON file."""
    return rules_from_json(json.loads(path.read_text(encoding="utf-8")))


class FaultBook:
    """The active rules with their remaining counts. Not thread-safe: the simulator locks."""

    def __init__(self, seed: int | None = None) -> None:
        self._entries: list[list[Any]] = []  # [rule, remaining or None]
        self._rng = random.Random(seed)

    def add(self, rule: FaultRule) -> None:
        self._entries.append([rule, rule.times])

    def clear(self) -> None:
        self._entries.clear()

    def active(self) -> list[dict[str, Any]]:
        return [{**rule.to_dict(), "remaining": left} for rule, left in self._entries]

    def pick(self, endpoint: str, batch_id: str | None, file_id: str | None) -> FaultRule | None:
        """The rule that fires for this request, if any (its remaining count is used up)."""
        for entry in self._entries:
            rule: FaultRule = entry[0]
            if not rule.matches(endpoint, batch_id, file_id):
                continue
            if rule.probability is not None and self._rng.random() >= rule.probability:
                continue
            if entry[1] is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    self._entries.remove(entry)
            return rule
        return None


_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    408: ("Request timed out.", "timeout", None),
    409: ("The request conflicted with another request.", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}


def fault_error(rule: FaultRule) -> dict[str, Any]:
    """The error envelope of a ``status`` fault."""
    status = rule.http_status
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    message, type_, code = _STATUS_ERRORS.get(status, ("Simulated error.", default_type, None))
    return {
        "error": {
            "message": rule.message or message,
            "type": rule.error_type or type_,
            "param": None,
            "code": rule.error_code or code,
        }
    }


def fault_headers(rule: FaultRule) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    if rule.retry_after is not None:
        headers.append(("retry-after", rule.retry_after))
    if rule.retry_after_ms is not None:
        headers.append(("retry-after-ms", rule.retry_after_ms))
    if rule.should_retry is not None:
        headers.append(("x-should-retry", "true" if rule.should_retry else "false"))
    return headers


def html_page(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
