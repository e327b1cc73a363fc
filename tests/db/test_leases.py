"""One lease rule for cancel requests and batches: expiry, dead processes, take-overs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from sqlalchemy import select, text

from orchestrator.clock import ManualClock
from orchestrator.core.liveness import OwnHeartbeats
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.leases import ProcessRegistry
from orchestrator.db.models import BatchEvent, Process
from orchestrator.db.polls import PollStore
from orchestrator.db.server_clock import ServerClock, database_clock, never_waiting
from orchestrator.errors import ConfigError
from orchestrator.processes.presence import Presence
from orchestrator.settings import Settings

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
LEASE = 120.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


Claim = Callable[[str, float], list[str]]  # owner, seconds after T0 -> claimed ids


@pytest.fixture(params=["cancels", "polls"])
def claim(request: pytest.FixtureRequest, database: Database) -> Claim:
    """Claims on either leased table, through its store; one due batch, `batch_a`."""
    if request.param == "cancels":
        cancels = CancelStore(database)
        cancels.request(["batch_a"], now=T0, requested_by="test")
        return lambda owner, s: [
            c.batch_id for c in cancels.claim_due(owner, now=at(s), limit=5, lease_seconds=LEASE)
        ]
    polls = PollStore(database)
    BatchStore(database).track(["batch_a"], now=T0, source="track")
    return lambda owner, s: [
        c.batch_id for c in polls.claim_due(now=at(s), owner=owner, lease_seconds=LEASE, limit=5)
    ]


def takeovers(database: Database) -> list[str]:
    with database.transaction() as session:
        return list(
            session.scalars(
                select(BatchEvent.detail)
                .where(BatchEvent.kind == "lease_recovered")
                .order_by(BatchEvent.id)
            )
        )


def test_a_lease_is_free_from_the_moment_it_expires_and_the_take_over_is_recorded(
    database: Database, claim: Claim
) -> None:
    assert claim("w1", 0) == ["batch_a"]
    assert claim("w2", LEASE - 0.001) == []
    assert claim("w2", LEASE) == ["batch_a"]  # the same `<=` for both tables
    (detail,) = takeovers(database)
    assert detail.startswith("w1: its lease expired at") and detail.endswith("taken over by w2")


def test_a_dead_processes_claims_are_free_once_its_heartbeat_is_stale(
    database: Database, claim: Claim
) -> None:
    processes = ProcessRegistry(database)
    processes.register("w1", "worker", now=T0)
    assert claim("w1", 0) == ["batch_a"]
    processes.beat("w1", now=at(5))
    assert claim("w2", 24.9) == []  # its last heartbeat is 19.9 s old: alive
    assert claim("w2", 25) == ["batch_a"]  # 20 s without a heartbeat: dead, long before 120 s
    (detail,) = takeovers(database)
    assert "stopped heartbeating" in detail


def test_a_live_process_keeps_its_claims_for_the_whole_lease(
    database: Database, claim: Claim
) -> None:
    processes = ProcessRegistry(database)
    processes.register("w1", "worker", now=T0)
    assert claim("w1", 0) == ["batch_a"]
    for second in range(5, 120, 5):
        processes.beat("w1", now=at(second))
        assert claim("w2", second) == []
    assert claim("w2", LEASE) == ["batch_a"]  # and not a moment longer: a stuck item is freed


def test_a_stopped_processes_claims_are_free_at_once(database: Database, claim: Claim) -> None:
    processes = ProcessRegistry(database)
    processes.register("w1", "worker", now=T0)
    assert claim("w1", 0) == ["batch_a"]
    processes.stopped("w1", now=at(1))
    assert claim("w2", 1) == ["batch_a"]


def test_an_unregistered_owner_is_judged_by_its_lease_alone(
    database: Database, claim: Claim
) -> None:
    assert claim("cron-once", 0) == ["batch_a"]
    assert claim("w2", 60) == []


def test_heartbeat_and_release_touch_only_the_owners_leases(database: Database) -> None:
    cancels = CancelStore(database)
    cancels.request(["batch_a", "batch_b"], now=T0, requested_by="test")
    cancels.claim_due("w1", now=T0, limit=1, lease_seconds=LEASE)
    assert cancels.heartbeat("w2", ["batch_a", "batch_b"], now=at(60), lease_seconds=LEASE) == 0
    assert cancels.heartbeat("w1", ["batch_a", "batch_b"], now=at(60), lease_seconds=LEASE) == 1
    assert cancels.claim_due("w2", now=at(150), limit=5, lease_seconds=LEASE)[0].batch_id == (
        "batch_b"
    )
    assert cancels.release("w1", ["batch_a", "batch_b"]) == 1
    assert [c.batch_id for c in cancels.claim_due("w3", now=at(150), limit=5, lease_seconds=1)] == [
        "batch_a"
    ]


def test_presence_registers_the_process_and_marks_it_stopped(database: Database) -> None:
    clock = ManualClock(T0)
    with Presence(ProcessRegistry(database), "w9", "worker", clock, every=60, stale_seconds=120):
        with database.transaction() as session:
            row = session.get(Process, "w9")
            assert row is not None and row.heartbeat_at == T0 and row.stopped_at is None
        clock.advance(3)
    with database.transaction() as session:
        row = session.get(Process, "w9")
        assert row is not None and row.stopped_at == at(3)


def test_a_heartbeat_that_may_look_like_death_is_refused() -> None:
    with pytest.raises(ConfigError, match="PROCESS_HEARTBEAT_SECONDS must be at most a third"):
        Settings(process_heartbeat_seconds=7, process_stale_seconds=20)


@pytest.mark.postgres
def test_the_server_clock_is_the_servers_and_counts_on_monotonically(pg_url: str) -> None:
    db = Database.connect(pg_url)
    try:
        ticks = [1000.0]
        clock = ServerClock(db, resync_seconds=2.0, monotonic=lambda: ticks[0])
        assert isinstance(database_clock(db), ServerClock)
        with db.transaction() as session:
            server = session.scalar(text("SELECT clock_timestamp()"))
        first = clock.now()
        assert abs((first - server).total_seconds()) < 1
        ticks[0] += 1.5  # no new read yet: the last one carried forward
        assert clock.now() == first + timedelta(seconds=1.5)
        ticks[0] += 3600  # an hour of monotonic time, but the server says otherwise
        after = clock.now()
        assert after >= first + timedelta(seconds=1.5)  # never backwards
        assert (after - first).total_seconds() < 60  # the server's time again, re-read
    finally:
        db.dispose()


class _StuckServerClock(ServerClock):
    """A server clock whose re-reads wait until the test lets them go."""

    def __init__(self, ticks: list[float]) -> None:
        self.reading, self.release = threading.Event(), threading.Event()
        self._stuck = False
        self._ticks = ticks
        super().__init__(cast(Database, None), resync_seconds=2.0, monotonic=lambda: ticks[0])
        self._stuck = True

    def _read(self) -> tuple[datetime, float]:
        if self._stuck:
            self.reading.set()
            assert self.release.wait(10)
        return datetime(2026, 12, 4, tzinfo=UTC), self._ticks[0]


def test_the_sends_clock_never_waits_while_another_thread_rereads_the_server() -> None:
    ticks = [1000.0]
    clock = _StuckServerClock(ticks)
    sends = never_waiting(clock)
    first = sends.now()
    ticks[0] += 5  # a re-read is due: the loop thread starts one and the server is slow
    rereading = threading.Thread(target=clock.now)
    rereading.start()
    assert clock.reading.wait(10)
    assert sends.now() == first + timedelta(seconds=5)  # at once, carried forward
    assert clock.now() == first + timedelta(seconds=5)  # nor does a second thread wait
    clock.release.set()
    rereading.join(10)
    assert sends.now() >= first + timedelta(seconds=5)  # never behind what it said
    manual = ManualClock()
    assert never_waiting(manual) is manual  # any other clock: as it is


def test_on_sqlite_the_clock_is_the_hosts(sqlite_url: str) -> None:
    db = Database.connect(sqlite_url)
    try:
        assert not isinstance(database_clock(db), ServerClock)
    finally:
        db.dispose()


def test_after_an_outage_a_live_process_keeps_its_lease(claim: Claim, database: Database) -> None:
    """The database was out for 24 s: every heartbeat is old when it comes back. w2, whose
    own beats were cut too, takes nothing of w1's until it has been heard for the whole
    stale time, long enough for a live w1 to beat again; w1 does, and keeps its lease.
    Once w1 really is silent, w2 takes its lease over."""
    processes = ProcessRegistry(database)
    processes.register("w1", "worker", now=T0)
    processes.register("w2", "worker", now=T0)
    own = database.own_heartbeats = OwnHeartbeats(timedelta(seconds=20))  # w2's Presence
    own.registered(T0, others_heard=True)
    assert claim("w1", 0) == ["batch_a"]
    processes.beat("w1", now=at(5))
    processes.beat("w2", now=at(5))
    own.beat(at(5))
    # out from 6 to 30; w2's loop claims before its presence thread beats
    assert claim("w2", 30) == []
    processes.beat("w2", now=at(31))
    own.beat(at(31))
    processes.beat("w1", now=at(32))  # w1 was alive all along
    assert claim("w2", 33) == []
    for s in (36, 41, 46, 51, 56):  # w2 beats on; w1 has stopped, silently
        processes.beat("w2", now=at(s))
        own.beat(at(s))
    assert claim("w2", 51) == []  # w1's last beat 19 s old: alive still
    assert claim("w2", 56) == ["batch_a"]
    assert takeovers(database) == [
        "w1: its process stopped heartbeating for 20s or stopped; taken over by w2"
    ]


def test_without_a_heartbeat_of_its_own_a_process_still_takes_expired_leases(
    claim: Claim, database: Database
) -> None:
    own = database.own_heartbeats = OwnHeartbeats(timedelta(seconds=20))
    own.registered(T0, others_heard=True)
    assert claim("w1", 0) == ["batch_a"]
    # w2 has not been heard for a minute, but w1's lease ran out: expiry needs no judge
    assert claim("w2", LEASE + 60) == ["batch_a"]


def test_a_process_started_right_after_an_outage_keeps_off_live_leases(
    claim: Claim, database: Database
) -> None:
    """w3 starts as the database comes back (a supervisor's restart, cron's next
    ``--once``): no process has beaten lately, so it cannot tell a live w1 whose beats the
    outage cut from a dead one, and waits as after a gap of its own."""
    processes = ProcessRegistry(database)
    processes.register("w1", "worker", now=T0)
    assert claim("w1", 0) == ["batch_a"]
    processes.beat("w1", now=at(5))  # out from 6 to 30
    clock = ManualClock(at(30))
    with Presence(ProcessRegistry(database), "w3", "worker", clock, every=60, stale_seconds=20):
        assert claim("w3", 30) == []
        processes.beat("w1", now=at(32))  # w1 lives on
        assert claim("w3", 33) == []
    assert takeovers(database) == []


def test_a_process_started_while_others_beat_takes_a_dead_ones_lease_at_once(
    claim: Claim, database: Database
) -> None:
    processes = ProcessRegistry(database)
    processes.register("w1", "worker", now=T0)
    processes.register("w2", "worker", now=T0)
    assert claim("w1", 0) == ["batch_a"]  # then w1 dies; w2 beats on
    processes.beat("w2", now=at(28))
    clock = ManualClock(at(30))
    with Presence(ProcessRegistry(database), "w3", "worker", clock, every=60, stale_seconds=20):
        assert claim("w3", 30) == ["batch_a"]


def test_a_heartbeat_of_half_the_stale_time_is_refused() -> None:
    """Beats land a little more than their interval apart: at exactly half, every beat
    broke the run (core/liveness.py) and no process could ever tell a dead one."""
    with pytest.raises(ConfigError, match="at most a third"):
        Settings(process_heartbeat_seconds=10, process_stale_seconds=20)
