"""Workers and reconcilers whose wall clocks are minutes apart behave as if they agreed.

Each process runs under libfaketime (Debian's `faketime`), its wall clock shifted by
up to ten minutes either way; monotonic clocks are left alone, as they are on a
host whose clock is merely wrong. The simulator and PostgreSQL run on the true
clock. Leases and due times are the database server's time, so no host takes over
a lease another still holds (two cancels in flight, sent twice) and none waits for
work that looks not yet due by its own clock.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.harness import faketime_env
from orchestrator.clock import SystemClock
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, CancelRequest, ResultFile
from orchestrator.db.server_clock import database_clock
from orchestrator.simulator import FaultRule, Scenario, Simulator, SimulatorConfig, SimulatorServer
from tests.conftest import REQUIRE_PG

from .conftest import expected_outcomes, stored_outcomes
from .test_worker_processes import wait_for

KEY = "sk-sim-skew-key-2468"
pytestmark = [pytest.mark.postgres, pytest.mark.slow]
SCENARIO = Scenario(validating_s=0, running_s=600, cancelling_s=1, body_bytes=50)


@pytest.fixture(scope="module")
def faketime() -> None:
    if not glob.glob("/usr/lib/*/faketime/libfaketime.so.1"):
        message = "faketime is not installed (apt-get install faketime; .ci/run does)"
        if REQUIRE_PG:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database.connect(pg_url)
    yield database
    database.dispose()  # also when the test failed: no connection left open


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, SimulatorServer]]:
    simulator = Simulator(SimulatorConfig(api_key=KEY, seed=3), SystemClock())
    with SimulatorServer(simulator) as server:
        yield simulator, server


def start(role: str, minutes: int, pg_url: str, url: str, log: Path) -> subprocess.Popen[bytes]:
    """`orchestrator worker|reconcile` with its wall clock `minutes` off; default leases."""
    env = {
        **os.environ,
        **faketime_env(minutes),
        "ORCHESTRATOR_DATABASE_URL": pg_url,
        "ORCHESTRATOR_DATABASE_POOL_SIZE": "3",
        "OPENAI_BASE_URL": url,
        "OPENAI_API_KEY": KEY,
        "ORCHESTRATOR_WORKER_CONCURRENCY": "4",
        "ORCHESTRATOR_WORKER_IDLE_SECONDS": "0.1",
        "ORCHESTRATOR_RECONCILE_CONCURRENCY": "3",
        "ORCHESTRATOR_RECONCILE_IDLE_SECONDS": "0.1",
        "ORCHESTRATOR_POLL_INITIAL_SECONDS": "0.5",
        "ORCHESTRATOR_POLL_MAX_SECONDS": "1",
        "ORCHESTRATOR_POLL_CANCELLING_MAX_SECONDS": "1",
        "ORCHESTRATOR_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "orchestrator", role]
    with log.open("wb") as stderr:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def stop_all(processes: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = [proc.wait(60) for proc, _ in processes]
    assert codes == [0] * len(codes), [log.read_text()[-1500:] for _, log in processes]


def open_work(db: Database) -> tuple[int, int]:
    with db.transaction() as s:
        cancels = s.scalar(
            select(func.count()).where(CancelRequest.state.in_(("pending", "accepted")))
        )
        unharvested = s.scalar(select(func.count()).where(Batch.harvest_state != "done"))
    return int(cancels or 0), int(unharvested or 0)


def sent_once_never_two_at_once(simulator: Simulator, ids: list[str]) -> None:
    assert {b: simulator.served("cancel", b) for b in ids} == dict.fromkeys(ids, 1)
    assert simulator.counters()["max_concurrent_cancels_any_batch"] == 1


def test_faketime_shifts_the_wall_clock_and_leaves_the_monotonic_one(faketime: None) -> None:
    probe = "import datetime, time; print(datetime.datetime.now(datetime.UTC).timestamp())"
    probe += "; print(time.monotonic()); time.sleep(0.01)"  # retries sleep: it must work
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **faketime_env(-10)},
        capture_output=True,
        check=True,
        timeout=30,
    )
    wall, monotonic = (float(line) for line in out.stdout.split())
    assert 590 < datetime.now(UTC).timestamp() - wall < 630
    assert 0 <= time.monotonic() - monotonic < 30


def test_processes_minutes_apart_send_each_cancel_once_and_store_each_result_once(
    pg_url: str,
    db: Database,
    sim: tuple[Simulator, SimulatorServer],
    tmp_path: Path,
    faketime: None,
) -> None:
    simulator, server = sim
    # Each cancel takes 0.2 s on the server: long enough to be in flight when a host
    # that thinks the lease has run out looks at it.
    simulator.add_fault(FaultRule(kind="slow", endpoint="cancel", delay_s=0.2, times=None))
    ids = [simulator.create_batch(4, SCENARIO, age_s=5) for _ in range(48)]
    tracked = [simulator.create_batch(3, SCENARIO, age_s=590) for _ in range(6)]  # ends itself
    now = database_clock(db).now()
    CancelStore(db).request(ids, now=now, requested_by="test")
    BatchStore(db).track(tracked, now=now, source="track")

    skews = [("worker", -10), ("worker", +10), ("worker", 0), ("reconcile", +10)]
    skews += [("reconcile", -10)]
    processes = []
    try:
        for n, (role, minutes) in enumerate(skews):
            log = tmp_path / f"{role}{n}{minutes:+d}.log"
            processes.append((start(role, minutes, pg_url, server.url, log), log))
        # A bound for a machine under heavy load; about 15 s on a quiet one.
        wait_for(lambda: open_work(db) == (0, 0), 150, "every cancel closed, every batch harvested")
    finally:
        stop_all(processes)

    sent_once_never_two_at_once(simulator, ids)
    with db.transaction() as s:
        outcomes = dict(s.execute(select(CancelRequest.batch_id, CancelRequest.outcome)).all())
        duplicates = s.scalar(select(func.sum(ResultFile.duplicates)))
    assert outcomes == dict.fromkeys(ids, "cancelled")
    assert duplicates == 0
    for batch_id in ids + tracked:
        assert stored_outcomes(db, batch_id) == expected_outcomes(simulator, batch_id)


def test_a_lone_worker_ten_minutes_behind_sends_every_cancel_once(
    pg_url: str,
    db: Database,
    sim: tuple[Simulator, SimulatorServer],
    tmp_path: Path,
    faketime: None,
) -> None:
    simulator, server = sim
    ids = [simulator.create_batch(3, SCENARIO, age_s=5) for _ in range(20)]
    CancelStore(db).request(ids, now=database_clock(db).now(), requested_by="test")
    log = tmp_path / "worker-10.log"
    worker = start("worker", -10, pg_url, server.url, log)
    try:
        wait_for(lambda: _accepted(db) == len(ids), 90, "every cancel")
    finally:
        stop_all([(worker, log)])
    sent_once_never_two_at_once(simulator, ids)


def _accepted(db: Database) -> int:
    with db.transaction() as s:
        return int(s.scalar(select(func.count()).where(CancelRequest.state == "accepted")) or 0)


METRICS_SNIPPET = r"""
import sys
from orchestrator.db.database import Database
from orchestrator.metrics import Metrics
from orchestrator.probes import Readiness
db = Database.connect(sys.argv[1])
paused = Metrics.for_database(db).registry.get_sample_value("orchestrator_sending_paused")
print(paused, Readiness(db).check()[0])
"""


@pytest.mark.parametrize("minutes", [10, -10])
def test_the_paused_gauge_of_a_host_minutes_off_says_what_readyz_says(
    faketime: None, db: Database, pg_url: str, minutes: int
) -> None:
    """A 300 s pause (a 401): a host ten minutes ahead read it as over (the alert never
    fired), one behind as still on after it ended. /readyz judged it by the database."""
    from datetime import timedelta

    from orchestrator.db.pauses import set_pause

    now = database_clock(db).now()
    set_pause(db, "401 from the API", now=now, until=now + timedelta(seconds=300))
    env = {**os.environ, **faketime_env(minutes)}
    done = subprocess.run(
        [sys.executable, "-c", METRICS_SNIPPET, pg_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    paused, ready = done.stdout.split()
    assert (float(paused), ready) == (1.0, "False")  # paused, and not ready: the same answer


@pytest.mark.parametrize("command", ["worker", "reconcile"])
def test_the_health_probe_s_clock_is_the_process_s_own(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """/healthz compares the loop's turns with each other: on the database's clock it
    waited on the database (up to the pool's 30 s) just when that was down, and the
    liveness probe restarted processes that were backing off as they should."""
    from orchestrator.cli import reconcile_commands, worker_commands
    from orchestrator.cli.main import main
    from orchestrator.db.server_clock import ServerClock
    from orchestrator.probes import Heartbeat

    made: list[Heartbeat] = []

    class Recorded(Heartbeat):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    for module in (worker_commands, reconcile_commands):
        monkeypatch.setattr(module, "Heartbeat", Recorded)
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", pg_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing is sent
    monkeypatch.delenv("ORCHESTRATOR_CONFIG", raising=False)
    main([command, "--once"])
    assert made and not any(isinstance(h.clock, ServerClock) for h in made)
