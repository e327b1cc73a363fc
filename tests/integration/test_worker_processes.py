"""Several real `orchestrator worker` processes sharing one PostgreSQL database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from orchestrator.clock import SystemClock
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import BatchEvent, CancelAttempt, CancelRequest
from orchestrator.simulator import FaultRule, Scenario, Simulator, SimulatorConfig, SimulatorServer

KEY = "sk-sim-processes-key-5678"
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for another process to reach a state: check, then block briefly, until a deadline."""
    done = threading.Event()
    deadline = SystemClock().now().timestamp() + timeout
    while not condition():
        if SystemClock().now().timestamp() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        done.wait(0.1)


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, SimulatorServer]]:
    sim = Simulator(SimulatorConfig(api_key=KEY, seed=11), SystemClock())
    with SimulatorServer(sim) as server:
        yield sim, server


def start_worker(pg_url: str, server: SimulatorServer, log: Path) -> subprocess.Popen[bytes]:
    """Start `orchestrator worker`; its stderr goes to `log`."""
    env = {
        **os.environ,
        "ORCHESTRATOR_DATABASE_URL": pg_url,
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": KEY,
        "ORCHESTRATOR_WORKER_CONCURRENCY": "8",
        "ORCHESTRATOR_WORKER_LEASE_SECONDS": "3",
        "ORCHESTRATOR_WORKER_HEARTBEAT_SECONDS": "0.5",
        "ORCHESTRATOR_WORKER_IDLE_SECONDS": "0.1",
        "ORCHESTRATOR_LOG_LEVEL": "INFO",
    }
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def counts(db: Database) -> dict[str, int]:
    with db.transaction() as s:
        rows = s.execute(select(CancelRequest.state, func.count()).group_by(CancelRequest.state))
        return {str(row[0]): int(row[1]) for row in rows}


def test_many_workers_send_every_cancel_once_at_a_time_even_when_one_is_killed(
    pg_url: str, sim: tuple[Simulator, SimulatorServer], tmp_path: Path
) -> None:
    simulator, server = sim
    # Every cancel takes 50 ms on the server, so there is always work in flight to kill.
    simulator.add_fault(FaultRule(kind="slow", endpoint="cancel", delay_s=0.05, times=None))
    ids = [simulator.create_batch(3, Scenario(), age_s=10) for _ in range(300)]
    db = Database.connect(pg_url)
    CancelStore(db).request(ids, now=SystemClock().now(), requested_by="test")

    workers = [start_worker(pg_url, server, tmp_path / f"w{n}.log") for n in range(3)]
    try:
        victim = workers[0]
        wait_for(lambda: counts(db).get("accepted", 0) >= 60, 60, "the first sends")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        wait_for(lambda: counts(db).get("accepted", 0) == len(ids), 90, "every cancel")
    finally:
        for proc in workers[1:]:
            proc.send_signal(signal.SIGTERM)
        exit_codes = [proc.wait(30) for proc in workers[1:]]
    assert exit_codes == [0, 0], [(tmp_path / f"w{n}.log").read_text()[-2000:] for n in (1, 2)]
    assert "stopped:" in (tmp_path / "w1.log").read_text()

    served = simulator.counters()
    # every batch got its cancel; none had two in flight at once
    assert all(simulator.served("cancel", b) >= 1 for b in ids)
    assert served["max_concurrent_cancels_any_batch"] == 1
    assert counts(db) == {"accepted": len(ids)}
    with db.transaction() as s:
        recorded = s.scalar(select(func.count()).select_from(CancelAttempt))
        recovered = s.scalar(
            select(func.count()).select_from(BatchEvent).where(BatchEvent.kind == "lease_recovered")
        )
    # Re-sends happen only for what the killed worker had sent and not yet recorded:
    # at most its leases (twice its concurrency of 8).
    resent = served["requests_total"]["cancel"] - len(ids)
    assert recorded is not None and recorded >= len(ids)
    assert resent <= 16
    assert recovered is not None and recovered >= resent
    db.dispose()
