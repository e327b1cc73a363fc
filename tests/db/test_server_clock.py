"""ServerClock's readings of the server's time: what a reading stands for, and which
readings it trusts. The database is faked: a session that, as SQLAlchemy's does, checks
a connection out of the pool only when first used, and a server whose true time runs
with this host's monotonic clock, so how far the clock is off is exact."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from orchestrator.db import server_clock as sc
from orchestrator.db.database import Database

S0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)  # the server's time at monotonic 1000


class FakeServer:
    def __init__(self) -> None:
        self.tick = 1000.0  # this host's monotonic clock
        self.pool_wait = 0.0  # a checkout waits this long (every connection busy)
        self.query_time = 0.0  # the SELECT's round trip
        self.read_at = 0.5  # how far into the round trip the server reads its time
        self.offset = 0.0  # seconds the server's clock was stepped by

    def true_now(self) -> datetime:
        return S0 + timedelta(seconds=self.tick - 1000.0 + self.offset)

    @contextmanager
    def transaction(self) -> Iterator[FakeSession]:
        yield FakeSession(self)


class FakeSession:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.connected = False

    def connection(self) -> None:
        if not self.connected:  # the pool checkout, on first use
            self.server.tick += self.server.pool_wait
            self.connected = True

    def read_time(self) -> datetime:
        self.connection()
        server = self.server
        server.tick += server.query_time * server.read_at
        read = server.true_now()
        server.tick += server.query_time * (1 - server.read_at)
        return read


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.setattr(sc, "server_now", lambda session: session.read_time())
    return FakeServer()


def clock_on(server: FakeServer) -> sc.ServerClock:
    return sc.ServerClock(cast(Database, server), resync_seconds=2.0, monotonic=lambda: server.tick)


def test_a_reread_that_waited_for_a_pool_connection_does_not_run_ahead(
    server: FakeServer,
) -> None:
    """The checkout is no round trip: a reading that waited 10 s for a connection (every
    one busy with ingestion) used to stand for the middle of the wait, 5 s ahead of the
    server, for good (the clock never goes back)."""
    clock = clock_on(server)
    assert clock.now() == S0
    server.tick = 1010.0
    server.pool_wait = 10.0
    read = clock.now()
    assert read == server.true_now(), f"{(read - server.true_now()).total_seconds()} s ahead"


def test_a_reading_with_a_long_round_trip_is_not_trusted(server: FakeServer) -> None:
    """A SELECT that took 10 s pins the server's time only to within 5 s: here it
    reached the server 10 s late and was answered at once, and the reading, taken for
    the middle of the round trip, put the clock 5 s ahead. The clock counts on from its
    last reading instead, and takes the next quick one."""
    clock = clock_on(server)
    assert clock.now() == S0
    server.tick = 1010.0
    server.query_time, server.read_at = 10.0, 1.0  # read at the end of it
    read = clock.now()
    assert read == server.true_now(), f"{(read - server.true_now()).total_seconds()} s ahead"
    server.tick += 2.0
    server.query_time, server.offset = 0.0, 3.0  # quick again; the server's clock stepped
    assert clock.now() == server.true_now()  # re-read: this reading is taken
