"""One request budget for every process that shares a database: a token bucket.

Pure: ``now`` is an argument (the database server's time, the one clock every
host shares). The bucket holds up to ``burst`` tokens and gains ``rate`` a second;
each request sent spends one. Processes take a few tokens at a time (``batch``),
so the shared row is written once per several requests, not once per request.

A 429 holds every process back: ``hold`` empties the bucket and refills it only
from the end of the server's Retry-After, so when the wait is over the processes
start again at the budget's pace instead of all at once with a full bucket. The
hold lasts ``MAX_HOLD_SECONDS`` at the most: the request that met the 429 still
waits the whole Retry-After (its own retry, persisted), but one answer, from a
proxy as likely as from the API, must not stop every process for a day; were the
limit still there, the next request meets the next 429.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Bucket", "BudgetRule", "Grant", "hold", "take"]

BURST_SECONDS = 0.5  # the bucket holds half a second of the budget
BATCH_SECONDS = 0.05  # a process takes up to a twentieth of a second's worth at once
MAX_BATCH = 50
MAX_HOLD_SECONDS = 60.0  # as the official client: a longer Retry-After is not waited out


@dataclass(frozen=True)
class BudgetRule:
    """``rate`` requests per second, shared by every process; ``burst`` the most that
    may go at once after a quiet spell; ``batch`` the most one process takes at once."""

    rate: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a positive number, got {self.rate!r}")

    @property
    def batch(self) -> int:
        return max(1, min(MAX_BATCH, math.floor(self.rate * BATCH_SECONDS)))

    @property
    def burst(self) -> float:
        return max(float(self.batch), self.rate * BURST_SECONDS)


@dataclass(frozen=True)
class Bucket:
    """The shared row: ``tokens`` as counted at ``counted_at``; until ``held_until``
    (a 429's Retry-After) no process sends and the bucket does not refill."""

    tokens: float
    counted_at: datetime
    held_until: datetime | None = None


@dataclass(frozen=True)
class Grant:
    bucket: Bucket  # the row to write back
    granted: int  # tokens taken (0..want)
    wait: float  # when none was granted: seconds until one may be


def _within_reach(bucket: Bucket, now: datetime) -> Bucket:
    """The bucket, unless its times lie further ahead of ``now`` than any hold reaches:
    then the clock that counted them (the database server's) has since stepped back,
    and waiting for them would stop every process for as long as the step. A smaller
    step refills nothing until ``now`` passes it (``_refilled``)."""
    latest = now + timedelta(seconds=MAX_HOLD_SECONDS)
    held_until = bucket.held_until
    if bucket.counted_at <= latest and (held_until is None or held_until <= latest):
        return bucket
    held_until = None if held_until is None else min(held_until, latest)
    return Bucket(bucket.tokens, min(bucket.counted_at, now), held_until)


def _refilled(bucket: Bucket, now: datetime, rule: BudgetRule) -> Bucket:
    elapsed = (now - bucket.counted_at).total_seconds()
    if elapsed <= 0:  # a hold's end not reached yet, or a clock that stepped back
        return bucket
    tokens = min(rule.burst, bucket.tokens + elapsed * rule.rate)
    return Bucket(tokens, now, bucket.held_until)


def take(bucket: Bucket, now: datetime, rule: BudgetRule, want: int) -> Grant:
    """Take up to ``want`` whole tokens (at least one, if any is there)."""
    if want < 1:
        raise ValueError(f"want must be at least 1, got {want!r}")
    bucket = _within_reach(bucket, now)
    if bucket.held_until is not None and now < bucket.held_until:
        return Grant(bucket, 0, (bucket.held_until - now).total_seconds())
    current = _refilled(bucket, now, rule)
    granted = min(want, math.floor(current.tokens))
    if granted < 1:
        wait = (1.0 - current.tokens) / rule.rate
        if current.counted_at > now:
            wait += (current.counted_at - now).total_seconds()
        return Grant(current, 0, wait)
    spent = Bucket(current.tokens - granted, current.counted_at, current.held_until)
    return Grant(spent, granted, 0.0)


def hold(bucket: Bucket, now: datetime, seconds: float) -> Bucket:
    """The server said 429 (retry after ``seconds``, ``MAX_HOLD_SECONDS`` at the most):
    nobody sends until then, and the bucket starts refilling, from empty, only then. A
    hold never shortens one in force."""
    bucket = _within_reach(bucket, now)
    until = now + timedelta(seconds=min(MAX_HOLD_SECONDS, max(0.0, seconds)))
    if bucket.held_until is not None and bucket.held_until > until:
        until = bucket.held_until
    return Bucket(0.0, max(until, bucket.counted_at), until)
