"""Rate-limit mode: so many requests per second per key, a 429 with Retry-After past it.

A token bucket per key on the simulator's clock (a ``ManualClock`` in tests makes
it exact). The real API documents no limits for these endpoints (reference doc
section 6.1), so the shape is a guess: OpenAI's limits behave as a bucket refilled
continuously, and its 429 names the limit and the wait.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from .config import SimulatorConfig
from .faults import FaultRule

__all__ = ["RateLimiter", "peak_in_window"]

MAX_ARRIVALS = 200_000  # the latest requests served, for tests of a client's rate


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """The simulator's lock guards ``check``; ``arrivals`` may be read from any thread."""

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        if not (math.isfinite(per_second) and per_second > 0):
            raise ValueError("rate_limit_per_second must be > 0")
        self.per_second = per_second
        self.burst = burst if burst is not None else max(1.0, per_second)
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError("rate_limit_burst must be >= 1")
        self.refused = 0
        self._buckets: dict[str, _Bucket] = {}
        self._served: deque[tuple[float, str]] = deque(maxlen=MAX_ARRIVALS)
        self._served_lock = threading.Lock()

    @staticmethod
    def of(config: SimulatorConfig) -> RateLimiter | None:
        if config.rate_limit_per_second is None:
            return None
        return RateLimiter(config.rate_limit_per_second, config.rate_limit_burst)

    def check(self, key: str, endpoint: str, now: float) -> FaultRule | None:
        """The 429 for this request, or None (served: then it is logged)."""
        wait = self.admit(key, now)
        if wait is None:
            with self._served_lock:
                self._served.append((now, endpoint))
            return None
        self.refused += 1
        return self.refusal(wait)

    def admit(self, key: str, now: float) -> float | None:
        """None: served; else the seconds until this key may send again."""
        bucket = self._buckets.setdefault(key, _Bucket(self.burst, now))
        if now > bucket.at:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.per_second)
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.per_second

    def arrivals(self) -> list[tuple[float, str]]:
        """The requests served (clock time, endpoint), oldest first."""
        with self._served_lock:
            return list(self._served)

    def snapshot(self) -> dict[str, float]:
        """For the counters: the limit, the 429s it gave, and the most requests served in
        any one second (of the latest ``MAX_ARRIVALS``), to compare a client's budget with."""
        return {
            "per_second": self.per_second,
            "burst": self.burst,
            "refused": self.refused,
            "peak_one_second": peak_in_window([t for t, _ in self.arrivals()], 1.0),
        }

    def refusal(self, wait: float) -> FaultRule:
        """The 429 that says so, in OpenAI's words and headers."""
        return FaultRule(
            kind="status",
            status=429,
            retry_after=str(max(1, math.ceil(wait))),
            retry_after_ms=str(max(1, math.ceil(wait * 1000))),
            message=(
                f"Rate limit reached for requests per second: Limit {self.per_second:g}. "
                f"Please try again in {wait * 1000:.0f}ms."
            ),
            error_type="requests",
            error_code="rate_limit_exceeded",
        )


def peak_in_window(times: list[float], seconds: float) -> int:
    """The most of ``times`` (ascending) that fall in any window ``seconds`` long."""
    peak, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= seconds:
            start += 1
        peak = max(peak, end - start + 1)
    return peak
