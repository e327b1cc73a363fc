"""When to retry a Batch API call, and how long to wait first. Pure: no I/O, no clock.

The rules follow the official Python client (reference doc section 5):

- timeouts, connection errors, dropped connections -> retry;
- HTTP 408, 409, 429 and every 5xx -> retry;
- a response header ``x-should-retry: true|false`` overrides the status rules,
  except that it never turns a 2xx into an error;
- 401/403 -> ``auth`` (stop sending anything), 404 -> ``not_found``, every other
  status -> ``rejected`` (not retried);
- a 2xx whose body is not JSON (an HTML page from a proxy, a cut-off body) is a
  protocol error -> retry.

The wait before a retry is the server's Retry-After when it sent one, else an
exponential backoff with multiplicative jitter. ``now`` and the random number are
arguments so that every result here is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import overload

__all__ = [
    "RetryPolicy",
    "TransportFailure",
    "Verdict",
    "VerdictKind",
    "classify",
    "outage_backoff",
    "parse_retry_after",
]

_MAX_EXPONENT = 1000  # like the official client: 2**1000 is still a finite float


def outage_backoff(failures: int, *, initial: float, cap: float) -> float:
    """How long a process waits after its ``failures``-th database failure in a row:
    ``initial`` doubling up to ``cap``. The exponent is bounded, so a database that is
    down for days (thousands of failures) still gives a number, never an OverflowError."""
    n = min(max(failures - 1, 0), 64)
    return min(cap, initial * 2.0**n)


class TransportFailure(StrEnum):
    """Why no usable HTTP response arrived."""

    TIMEOUT = "timeout"  # connect, read, write or pool timeout
    CONNECT = "connect"  # could not connect (refused, DNS, TLS, proxy)
    READ = "read"  # connection dropped or body cut short (peer closed, reset)
    PROTOCOL = "protocol"  # a response arrived but could not be understood


class VerdictKind(StrEnum):
    OK = "ok"
    RETRY = "retry"
    AUTH = "auth"  # 401/403: stop all sending until a human looks
    NOT_FOUND = "not_found"  # 404
    REJECTED = "rejected"  # any other non-retried error


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str
    retry_after: float | None = None  # seconds, from the response headers, uncapped

    @property
    def retryable(self) -> bool:
        return self.kind is VerdictKind.RETRY


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _positive_finite(value: float) -> float | None:
    return value if math.isfinite(value) and value > 0 else None


def _parse_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def _parse_http_date(text: str, now: datetime) -> float | None:
    try:
        moment = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": HTTP dates are GMT anyway
        moment = moment.replace(tzinfo=UTC)
    try:
        delta = (moment - now).total_seconds()
    except OverflowError:
        return None
    return _positive_finite(delta)


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds the server asks us to wait, or None if it asked nothing usable.

    ``retry-after-ms`` (float milliseconds) wins; then ``retry-after`` as float
    seconds; then ``retry-after`` as an HTTP-date relative to ``now``. Zero,
    negative, infinite, NaN and unparseable values all give None.
    """
    lowered = _lower_keys(headers)
    millis = _parse_float(lowered.get("retry-after-ms"))
    if millis is not None and (seconds := _positive_finite(millis / 1000.0)) is not None:
        return seconds
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    as_float = _parse_float(raw)
    if as_float is not None:
        return _positive_finite(as_float)
    return _parse_http_date(raw, now)


def _status_verdict(status: int, retry_after: float | None) -> Verdict:
    if status in (408, 409, 429) or status >= 500:
        names = {408: "request timeout", 409: "conflict", 429: "rate limited"}
        return Verdict(
            VerdictKind.RETRY, f"HTTP {status} {names.get(status, 'server error')}", retry_after
        )
    if status in (401, 403):
        what = "unauthenticated" if status == 401 else "permission denied"
        return Verdict(VerdictKind.AUTH, f"HTTP {status} {what}", retry_after)
    if status == 404:
        return Verdict(VerdictKind.NOT_FOUND, "HTTP 404 not found", retry_after)
    return Verdict(VerdictKind.REJECTED, f"HTTP {status} not retried", retry_after)


def _override(verdict: Verdict, status: int, should_retry: str | None) -> Verdict:
    flag = (should_retry or "").strip().lower()
    if flag == "true" and verdict.kind is not VerdictKind.RETRY:
        return Verdict(
            VerdictKind.RETRY, f"HTTP {status}, x-should-retry: true", verdict.retry_after
        )
    if flag == "false" and verdict.kind is VerdictKind.RETRY:
        # a 408/409/429/5xx the server says not to retry
        return Verdict(
            VerdictKind.REJECTED, f"HTTP {status}, x-should-retry: false", verdict.retry_after
        )
    return verdict


@overload
def classify(outcome: TransportFailure) -> Verdict: ...


@overload
def classify(
    outcome: int, headers: Mapping[str, str], now: datetime, *, body_is_json: bool = True
) -> Verdict: ...


def classify(
    outcome: int | TransportFailure,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
    *,
    body_is_json: bool = True,
) -> Verdict:
    """Decide what to do about one attempt.

    ``outcome`` is either the HTTP status of the response (then ``headers`` and
    ``now`` are needed, ``now`` for an HTTP-date Retry-After) or the kind of
    transport failure. ``body_is_json`` matters only for a 2xx: False means the
    body could not be decoded, a protocol error that is retried.
    """
    if isinstance(outcome, TransportFailure):
        return Verdict(VerdictKind.RETRY, _FAILURE_REASONS[outcome])
    status = outcome
    lowered = _lower_keys(headers or {})
    retry_after = parse_retry_after(lowered, now) if now is not None else None
    if 200 <= status < 300:
        if body_is_json:
            return Verdict(VerdictKind.OK, f"HTTP {status}", retry_after)
        return Verdict(
            VerdictKind.RETRY, f"HTTP {status} with a body that is not JSON", retry_after
        )
    verdict = _status_verdict(status, retry_after)
    return _override(verdict, status, lowered.get("x-should-retry"))


_FAILURE_REASONS: dict[TransportFailure, str] = {
    TransportFailure.TIMEOUT: "timed out",
    TransportFailure.CONNECT: "could not connect",
    TransportFailure.READ: "connection dropped",
    TransportFailure.PROTOCOL: "unreadable response",
}


def _check_unit(u: float) -> None:
    if not 0.0 <= u < 1.0:
        raise ValueError(f"jitter draw u must be in [0, 1), got {u!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """Timing knobs for in-process retries and for durable (persisted) retries.

    - ``initial_delay``/``max_delay``: in-process backoff, doubling per retry, capped.
    - ``jitter``: multiplicative, a delay d becomes ``d * (1 - jitter * u)``, u in [0, 1).
    - ``max_in_process_attempts``: attempts within one call (first try included)
      before handing back to the durable layer.
    - ``max_in_process_wait``: a single wait longer than this is not slept through;
      the caller persists a next-attempt time instead.
    - ``durable_initial``/``durable_max``: backoff between durable attempts.
    - ``max_retry_after``: a server Retry-After beyond this is capped to it.
    """

    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    max_in_process_attempts: int = 3
    max_in_process_wait: float = 10.0
    durable_initial: float = 5.0
    durable_max: float = 900.0
    max_retry_after: float = 86400.0

    def __post_init__(self) -> None:
        for name in (
            "initial_delay",
            "max_delay",
            "durable_initial",
            "durable_max",
            "max_retry_after",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RetryPolicy.{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.max_in_process_wait) and self.max_in_process_wait >= 0):
            raise ValueError(
                f"RetryPolicy.max_in_process_wait must be >= 0, got {self.max_in_process_wait!r}"
            )
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1), got {self.jitter!r}")
        if self.max_in_process_attempts < 1:
            raise ValueError(
                "RetryPolicy.max_in_process_attempts must be >= 1, "
                f"got {self.max_in_process_attempts!r}"
            )

    def backoff(self, retries_taken: int, u: float) -> float:
        """In-process wait before retry number ``retries_taken + 1`` (0 = first retry)."""
        _check_unit(u)
        n = min(max(retries_taken, 0), _MAX_EXPONENT)
        return min(self.initial_delay * 2.0**n, self.max_delay) * (1.0 - self.jitter * u)

    def durable_backoff(self, attempts: int, u: float) -> float:
        """Wait before the next durable attempt, after ``attempts`` failed ones (>= 1).

        1 -> ``durable_initial``, then doubling up to ``durable_max``; jittered.
        Values below 1 are treated as 1.
        """
        _check_unit(u)
        n = min(max(attempts - 1, 0), _MAX_EXPONENT)
        return min(self.durable_initial * 2.0**n, self.durable_max) * (1.0 - self.jitter * u)

    def durable_delay(
        self, attempts: int, u: float, asked: float | None = None, *, went_out: bool = True
    ) -> float:
        """When to try again, durably, after ``attempts`` failed ones: our backoff, or
        what was ``asked`` (the server's Retry-After, or the wait too long to sleep
        through in-process) where that is longer. Retry-After means "no earlier than":
        a request that went out waits at least the backoff, whatever a server asks (1 ms
        would be a hot loop). One the shared budget held back (``went_out`` False) waits
        only its hold: nothing was sent."""
        if asked is not None and not went_out:
            return asked
        backoff = self.durable_backoff(attempts, u)
        return backoff if asked is None else max(asked, backoff)

    def cap_retry_after(self, retry_after: float) -> float:
        return min(retry_after, self.max_retry_after)

    def next_wait(self, verdict: Verdict, retries_taken: int, u: float) -> float:
        """The server's Retry-After (capped at ``max_retry_after``) if any, else backoff."""
        if verdict.retry_after is not None:
            return self.cap_retry_after(verdict.retry_after)
        return self.backoff(retries_taken, u)
