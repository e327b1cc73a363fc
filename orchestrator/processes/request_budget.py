"""One process's share of the request budget kept in the database.

The API client asks ``take`` before every request it sends. Tokens are fetched
from the shared row a few at a time (``BudgetRule.batch``: a twentieth of a
second's worth), so the database sees one short transaction per several requests.
A fetched token is used within ``HOLD_SECONDS`` or dropped: tokens held unused
would let a quiet process burst past the budget later.

While the database says to wait (the bucket is empty, or a 429 holds everyone
back), this process remembers until when, so its threads do not ask again sooner.
A 429 this process gets drops its own tokens at once and writes the hold for all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from orchestrator.core.request_budget import MAX_HOLD_SECONDS, BudgetRule
from orchestrator.db.request_budget import BudgetStore
from orchestrator.errors import DatabaseError

__all__ = ["DEFAULT_HOLD_SECONDS", "SharedBudget"]

log = logging.getLogger(__name__)

HOLD_SECONDS = 1.0  # an unused token is dropped after this long
DEFAULT_HOLD_SECONDS = 1.0  # a 429 without Retry-After holds everyone back this long
DATABASE_DOWN_WAIT = 1.0  # the budget cannot be read: wait, do not send unbudgeted
MIN_WAIT = 0.001  # the least wait for a token that was not granted


class SharedBudget:
    """A ``SendBudget`` (api/budget.py) backed by the shared row. Thread-safe."""

    def __init__(
        self,
        store: BudgetStore,
        rule: BudgetRule,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._rule = rule
        self._monotonic = monotonic
        self._lock = threading.Lock()  # one fetch at a time; the others wait on it
        self._tokens = 0
        self._tokens_until = 0.0
        self._wait_until = 0.0
        self.fetches = 0  # transactions on the shared row, for the benchmarks and tests

    def take(self) -> float:
        with self._lock:
            now = self._monotonic()
            if now < self._wait_until:
                return self._wait_until - now
            if self._tokens > 0 and now < self._tokens_until:
                self._tokens -= 1
                return 0.0
            try:
                grant = self._store.take(self._rule, self._rule.batch)
            except DatabaseError as exc:
                log.warning("request budget unreadable (%s): waiting, not sending", exc)
                return self._wait(now, DATABASE_DOWN_WAIT)
            finally:
                self.fetches += 1
            if grant.granted == 0 or self._wait_until > now:  # or a 429 came meanwhile
                return self._wait(now, grant.wait)
            self._tokens = grant.granted - 1
            self._tokens_until = now + HOLD_SECONDS
            return 0.0

    def _wait(self, now: float, wait: float) -> float:
        """Hold this process back ``wait`` seconds from ``now``, or longer if a 429 that
        came during the fetch asked for longer; drop the tokens held. Never 0, which
        means "send now" (a wait of 1e-17 vanishes in ``now + wait``)."""
        self._tokens = 0
        wait = max(wait, self._wait_until - now, MIN_WAIT)
        self._wait_until = now + wait
        return wait

    def take_nowait(self) -> float | None:
        """A token held here, or the wait already known; None when only the database
        can say (or another thread is asking it): then call ``take``."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            now = self._monotonic()
            if now < self._wait_until:
                return self._wait_until - now
            if self._tokens > 0 and now < self._tokens_until:
                self._tokens -= 1
                return 0.0
            return None
        finally:
            self._lock.release()

    def rate_limited(self, retry_after: float | None) -> None:
        seconds = retry_after if retry_after is not None else DEFAULT_HOLD_SECONDS
        seconds = min(seconds, MAX_HOLD_SECONDS)  # as the shared row's: this process too
        # Not under the lock: a thread fetching tokens holds it through a database round
        # trip, and the hold must reach the database before the tokens others take there.
        # Two plain assignments; a take racing with them waits at its next fetch anyway.
        self._tokens = 0
        self._wait_until = max(self._wait_until, self._monotonic() + seconds)
        try:
            until: datetime = self._store.hold(self._rule, seconds)
        except DatabaseError as exc:  # this process holds back anyway
            log.warning("could not share the 429's hold with other processes (%s)", exc)
            return
        log.warning(
            "HTTP 429: every process holds back until %s (Retry-After %.3gs)",
            until.isoformat(),
            seconds,
            extra={"action": "rate_limited"},
        )
