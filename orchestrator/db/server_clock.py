"""The database server's clock: the one time that every host agrees on.

Leases and due times are compared by many hosts at once, so they are written and
judged in the database server's time, never a host's. ``ServerClock`` reads the
server's time (``server_now``) every couple of seconds and carries it forward in
between with this host's monotonic clock, which a wrong or jumping wall clock
does not move. So a host whose wall clock is minutes off still reads the server's
time, to within a round trip, at the cost of one tiny query every two seconds.

SQLite is one host's file: its clock is that host's (``SystemClock``). Tests
inject a ``ManualClock`` instead of either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.clock import Clock, SystemClock
from orchestrator.db.database import Database
from orchestrator.db.server_time import server_now
from orchestrator.errors import DatabaseError

__all__ = ["ServerClock", "database_clock", "never_waiting"]

log = logging.getLogger(__name__)

RESYNC_SECONDS = 2.0
# A reading is taken for the middle of its round trip, so it may be off by half of it.
# A longer one is not trusted: the clock counts on from the last reading instead (the
# monotonic clock drifts by milliseconds a day), and never runs a second ahead for it.
MAX_ROUND_TRIP_SECONDS = 1.0


class _SlowReading(Exception):
    """The round trip was too long to say when the server read its time."""


class ServerClock:
    """PostgreSQL's clock, read once every ``resync_seconds``; thread-safe.

    Never goes backwards, and never raises once it has read the server once: when
    the database cannot be reached it keeps counting from its last reading (the
    monotonic clock drifts by milliseconds a day, not minutes).
    """

    def __init__(
        self,
        db: Database,
        *,
        resync_seconds: float = RESYNC_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        max_round_trip: float = MAX_ROUND_TRIP_SECONDS,
    ) -> None:
        self._db = db
        self._resync = resync_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # The first read must work, however slow: there is no earlier one to count on from.
        self._max_round_trip: float | None = None
        self._anchor, self._anchor_at = self._read()
        self._max_round_trip = max_round_trip
        self._checked_at = self._anchor_at
        self._last = self._anchor

    def _read(self) -> tuple[datetime, float]:
        """The server's time, and the monotonic moment it stands for (mid round trip).

        The round trip is the SELECT's alone: the session checks a connection out of
        the pool (and pings it) before the clock starts, so a wait for a connection,
        seconds when every one is busy, is not taken for the network's and the reading
        is not pinned to the middle of that wait (it put the clock ahead by half of it,
        for good: the clock never goes back). ``_SlowReading`` when the round trip was
        longer than ``max_round_trip``."""
        with self._db.transaction() as session:
            session.connection()
            before = self._monotonic()
            server = server_now(session)
            after = self._monotonic()
        if self._max_round_trip is not None and after - before > self._max_round_trip:
            raise _SlowReading(f"the server's time took {after - before:.3f}s to read")
        return server, (before + after) / 2

    def now(self) -> datetime:
        """The server's time: re-read by the caller when the last reading is
        ``resync_seconds`` old (one thread at a time; the others carry on meanwhile)."""
        with self._lock:
            due = self._monotonic() - self._checked_at >= self._resync
            if due:
                self._checked_at = self._monotonic()
        if due:  # outside the lock: no thread waits on the database for another
            try:
                anchor, anchor_at = self._read()
            except (DatabaseError, SQLAlchemyError, _SlowReading) as exc:
                log.debug("server clock not re-read (%s); counting on from the last read", exc)
            else:
                with self._lock:
                    self._anchor, self._anchor_at = anchor, anchor_at
        return self.carried_now()

    def carried_now(self) -> datetime:
        """The last reading carried forward by the monotonic clock: never waits on the
        database (see ``never_waiting``)."""
        with self._lock:
            elapsed = self._monotonic() - self._anchor_at
            self._last = max(self._last, self._anchor + timedelta(seconds=elapsed))
            return self._last


class _Carried:
    """A ``ServerClock`` as a thread that must not wait on the database reads it."""

    def __init__(self, clock: ServerClock) -> None:
        self._clock = clock

    def now(self) -> datetime:
        return self._clock.carried_now()


def database_clock(db: Database) -> Clock:
    """The clock for every time that hosts compare: the server's on PostgreSQL."""
    return ServerClock(db) if db.is_postgres else SystemClock()


def never_waiting(clock: Clock) -> Clock:
    """``clock`` for a thread that must never wait on the database (the worker's event
    loop, where every send would wait with it): a ``ServerClock``'s last reading carried
    forward, re-read only by the threads that call its own ``now`` (the worker's loop
    does, every turn). Never behind what ``clock`` has said; any other clock as it is."""
    return _Carried(clock) if isinstance(clock, ServerClock) else clock
