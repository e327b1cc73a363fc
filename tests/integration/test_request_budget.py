"""One request budget for every process on a database, against the simulator over loopback.

Three workers, each with its own database connection pool and its own API client
(as three `orchestrator worker` processes would be), share
``api_max_requests_per_second`` through the database. The simulator logs when each
request arrived: over any stretch of time they never exceed the budget by more
than one burst, and a 429 that one of them gets holds back all three.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings
from orchestrator.clock import SystemClock
from orchestrator.core.request_budget import BudgetRule
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import CancelRequest
from orchestrator.db.request_budget import BudgetStore
from orchestrator.processes.request_budget import SharedBudget
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from orchestrator.secret import Secret
from orchestrator.simulator import FaultRule, Simulator, SimulatorConfig, SimulatorServer

KEY = "sk-sim-budget-test"
POLICY = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_in_process_wait=5.0)
PROCESSES = 3
CONFIG = WorkerConfig(concurrency=8, idle_seconds=0.01)


@pytest.fixture
def sim() -> Simulator:
    # rate-limit mode far above the budget: it refuses nothing, but logs every arrival
    config = SimulatorConfig(api_key=KEY, seed=5, rate_limit_per_second=100_000)
    return Simulator(config, SystemClock())


@pytest.fixture
def server(sim: Simulator) -> Iterator[SimulatorServer]:
    with SimulatorServer(sim) as running:
        yield running


def run_workers(db_url: str, server: SimulatorServer, rule: BudgetRule) -> list[SharedBudget]:
    """Three workers, each on its own connections, until nothing is due; their budgets."""
    budgets, threads, stops = [], [], []
    for n in range(PROCESSES):
        db = Database.connect(db_url)
        budget = SharedBudget(BudgetStore(db), rule)
        client = AsyncBatchApiClient(
            ApiSettings(api_key=Secret(KEY), base_url=server.url), policy=POLICY, budget=budget
        )
        store, owner = CancelStore(db), f"budget-worker-{n}"
        worker = CancelWorker(
            store, client, config=CONFIG, policy=POLICY, clock=SystemClock(), owner=owner
        )
        stop = threading.Event()
        threads.append(threading.Thread(target=worker.run, args=(stop,), kwargs={"once": True}))
        budgets.append(budget)
        stops.append(db)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for db in stops:
        db.dispose()
    return budgets


def ask(database: Database, sim: Simulator, count: int) -> list[str]:
    ids = [sim.create_batch(5, age_s=10) for _ in range(count)]
    CancelStore(database).request(ids, now=SystemClock().now(), requested_by="budget-test")
    return ids


def largest_excess(times: list[float], rate: float) -> float:
    """The most requests in any stretch [t_i, t_j] beyond ``rate`` times its length."""
    times = sorted(times)
    return max(
        (j - i + 1) - rate * (times[j] - times[i])
        for i in range(len(times))
        for j in range(i, len(times))
    )


def accepted(database: Database) -> int:
    with database.transaction() as session:
        query = select(func.count()).where(CancelRequest.state == "accepted")
        return int(session.scalar(query.select_from(CancelRequest)) or 0)


def test_three_processes_together_stay_within_one_budget(
    database: Database, db_url: str, sim: Simulator, server: SimulatorServer
) -> None:
    rule = BudgetRule(40)
    ask(database, sim, 100)
    budgets = run_workers(db_url, server, rule)
    assert accepted(database) == 100
    assert sim.rate_limiter is not None
    times = [t for t, endpoint in sim.rate_limiter.arrivals() if endpoint == "cancel"]
    assert len(times) == 100
    # one burst: what the shared bucket holds, plus what each process may hold unspent
    assert largest_excess(times, rule.rate) <= rule.burst + PROCESSES * rule.batch
    assert times[-1] - times[0] >= (100 - rule.burst) / rule.rate * 0.9
    assert all(b.fetches > 0 for b in budgets)  # all three sent under it


def test_a_429_one_process_gets_holds_back_all_of_them(
    database: Database, db_url: str, sim: Simulator, server: SimulatorServer
) -> None:
    rule = BudgetRule(20)
    ask(database, sim, 40)
    sim.add_fault(FaultRule(kind="status", endpoint="cancel", status=429, retry_after="2"))
    run_workers(db_url, server, rule)
    assert accepted(database) == 40
    assert sim.rate_limiter is not None
    times = sorted(t for t, endpoint in sim.rate_limiter.arrivals() if endpoint == "cancel")
    refused_at = times[0]  # the first cancel to arrive got the 429
    # what was already on its way when the 429 came back may arrive just after it;
    # then nothing, from any process, until its Retry-After has passed
    held = [t - refused_at for t in times if refused_at + 0.3 < t < refused_at + 1.9]
    assert held == [], [round(t - refused_at, 3) for t in times]
    assert len(times) == 41  # each cancel once, and the refused one again
    # most were still to send when the 429 came: they went after the hold, at the budget's pace
    after = [t for t in times if t >= refused_at + 1.9]
    assert len(after) >= 40 - rule.burst - rule.rate * 0.3 - 1
