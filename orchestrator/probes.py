"""Liveness and readiness, served next to /metrics by every long-running process.

- ``/healthz``: the process loop is alive. The loop beats a ``Heartbeat`` every
  turn (and the reconciler every chunk of a long download); a beat before a
  deliberate wait says how long the wait is, so a process that is only waiting
  stays healthy. 200 while the last beat's deadline has not passed, else 503: a
  loop stuck in a call that never returns.
- ``/readyz``: the database answers, its schema is the one this version needs,
  and sending is not paused (a 401/403). Checked when asked, at most once a
  second; 200 or 503, with the reason as text.

The heartbeat's clock is this process's own: it is compared with nothing
another host wrote. The pause is compared with the database's time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.clock import Clock, SystemClock
from orchestrator.db import revision  # not migrate: alembic is for changing schemas
from orchestrator.db.database import Database
from orchestrator.db.pauses import active_pause_in
from orchestrator.db.server_time import server_now
from orchestrator.errors import DatabaseError

__all__ = ["Heartbeat", "HeartbeatCollector", "Probes", "Readiness", "probe_app"]

DEFAULT_STALE_SECONDS = 60.0


class Heartbeat:
    """When the loop last turned, and by when it must turn again; thread-safe."""

    def __init__(self, clock: Clock | None = None, *, stale_seconds: float = DEFAULT_STALE_SECONDS):
        self.clock: Clock = clock or SystemClock()
        self.stale = timedelta(seconds=stale_seconds)
        self._lock = threading.Lock()
        self.last = self.clock.now()
        self.deadline = self.last + self.stale

    def beat(self, busy_for: float = 0.0) -> None:
        """The loop turned; ``busy_for``: it now waits that long on purpose."""
        now = self.clock.now()
        with self._lock:
            self.last = now
            self.deadline = now + timedelta(seconds=busy_for) + self.stale

    def check(self) -> tuple[bool, str]:
        now = self.clock.now()
        with self._lock:
            last, deadline = self.last, self.deadline
        since = (now - last).total_seconds()
        if now <= deadline:
            return True, f"ok: the loop turned {since:.0f}s ago"
        return (
            False,
            f"stalled: the loop last turned {since:.0f}s ago (due by {deadline:%H:%M:%S}Z)",
        )


class Readiness:
    """Can this process do its work: database up and migrated, sending not paused?"""

    def __init__(
        self, db: Database, *, clock: Clock | None = None, cache_seconds: float = 1.0
    ) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.cache = timedelta(seconds=cache_seconds)
        self.head = revision.head_revision()
        self._lock = threading.Lock()
        self._last: tuple[datetime, tuple[bool, str]] | None = None

    def check(self) -> tuple[bool, str]:
        now = self.clock.now()
        with self._lock:  # one check at a time; probes arriving meanwhile share its answer
            if self._last is not None and now - self._last[0] < self.cache:
                return self._last[1]
            answer = self._ask()
            self._last = (now, answer)
            return answer

    def _ask(self) -> tuple[bool, str]:
        try:
            current = revision.current_revision(self.db.engine)
            if current != self.head:
                return False, f"database at revision {current}, this version needs {self.head}"
            with self.db.transaction() as session:
                pause = active_pause_in(session, server_now(session))
                if pause is not None:
                    return False, f"sending paused until {pause.until:%Y-%m-%d %H:%M:%S}Z"
        except (DatabaseError, SQLAlchemyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return False, f"database unavailable: {first}"
        return True, "ok"


class Probes:
    def __init__(self, heartbeat: Heartbeat | None, readiness: Readiness | None) -> None:
        self.heartbeat = heartbeat
        self.readiness = readiness

    def health(self) -> tuple[bool, str]:
        return self.heartbeat.check() if self.heartbeat is not None else (True, "ok")

    def ready(self) -> tuple[bool, str]:
        return self.readiness.check() if self.readiness is not None else (True, "ok")


_App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def probe_app(metrics_app: _App, probes: Probes | None) -> _App:
    """``metrics_app`` plus ``/healthz`` and ``/readyz``."""
    checks = {"/healthz": "health", "/readyz": "ready"}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        name = checks.get(str(environ.get("PATH_INFO", "")).rstrip("/"))
        if name is None or probes is None:
            return metrics_app(environ, start_response)
        ok, reason = getattr(probes, name)()
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [reason.encode() + b"\n"]

    return app


class HeartbeatCollector(Collector):
    """The heartbeat as gauges, so an alert can see a loop that stopped turning."""

    def __init__(self, heartbeat: Heartbeat, process: str) -> None:
        self.heartbeat = heartbeat
        self.process = process

    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily(
            "orchestrator_loop_last_beat_timestamp_seconds",
            "When this process's loop last turned (Unix time).",
            labels=["process"],
        )
        last.add_metric([self.process], self.heartbeat.last.timestamp())
        yield last
        deadline = GaugeMetricFamily(
            "orchestrator_loop_deadline_timestamp_seconds",
            "By when the loop must turn again; past it, /healthz fails (Unix time).",
            labels=["process"],
        )
        deadline.add_metric([self.process], self.heartbeat.deadline.timestamp())
        yield deadline
