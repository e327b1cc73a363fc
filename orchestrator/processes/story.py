"""A long-running process's periodic one-line summary at INFO.

Between the per-event lines (a cancel settled, a harvest done) an operator tailing
the log wants to know, without a query, that the process is alive and how far
behind it is: `worker: 3 due, 16 in flight; last 60s: 41 settled, 2 error(s)`.
The counts since the last line come from the process as it works (`add`, from any
thread); the backlog (due, in flight) is asked of the database only when a line is
due, so a quiet fleet costs one count query a minute.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

log = logging.getLogger("orchestrator.processes")


@dataclass
class PeriodicSummary:
    """`line(counts)` words what happened since the last line; `backlog(now)` gives
    (due, in flight). Nothing is logged when `every_seconds` is 0."""

    name: str
    every_seconds: float
    since: datetime  # when the last line was logged (or the process began)
    backlog: Callable[[datetime], tuple[int, int]]
    line: Callable[[Counter[str]], str]
    _counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self._lock:
            self._counts.update(counts)

    def tell_if_due(self, now: datetime) -> bool:
        """Log the line if `every_seconds` have passed since the last one."""
        elapsed = (now - self.since).total_seconds()
        if self.every_seconds <= 0 or elapsed < self.every_seconds:
            return False
        due, in_flight = self.backlog(now)
        with self._lock:
            counts, self._counts = self._counts, Counter()
            self.since = now
        log.info(
            "%s: %d due, %d in flight; last %.0fs: %s",
            self.name,
            due,
            in_flight,
            elapsed,
            self.line(counts),
            extra={"action": "summary", "due": due, "in_flight": in_flight, **counts},
        )
        return True
