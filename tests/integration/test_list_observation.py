"""Observing batches through list pages records exactly what single GETs would.

Two databases watch the same simulated account: one reconciler observes through
``GET /v1/batches`` pages (``list_min_tracked``), the other with one GET per batch. A
page recorded at a moment must leave the same rows and events as GETs of the same
batches at that moment; and run to the end, both must agree on every batch: its
statuses, the server's timestamps, its results and its events, including batches
pushed off the first pages by newer ones and a tracked batch the list never returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.observation import parse_batch
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.core.status import TIMESTAMP_FIELDS
from orchestrator.db import migrate
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine
from orchestrator.db.list_polls import ListPollStore
from orchestrator.db.models import Batch, BatchEvent, CancelRequest
from orchestrator.db.polls import PollStore
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.secret import Secret
from orchestrator.simulator import Scenario, Simulator, SimulatorConfig, SimulatorServer
from tests.conftest import _scratch_pg

KEY = "sk-sim-list-test"
UNLISTED = "batch_" + "f" * 32  # tracked, but the API never lists it (nor knows it)


def fresh_database(tmp_path: Path, name: str) -> Database:
    url = f"sqlite:///{tmp_path / name}.sqlite3"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return Database.connect(url)


def account(clock: ManualClock) -> tuple[Simulator, list[str]]:
    """Untracked batches of other systems, then ours, in several lifecycles."""
    sim = Simulator(SimulatorConfig(api_key=KEY, seed=11), clock)
    for _ in range(40):
        sim.create_batch(2, Scenario(running_s=5000))
    lifecycles = [
        Scenario(running_s=40),
        Scenario(running_s=90, failed_request_ratio=0.5),
        Scenario(fail_validation=True),
        Scenario(running_s=3000, expires_after_s=120),
        Scenario(running_s=20, finalizing_s=30),
    ]
    ours = [sim.create_batch(4, lifecycles[i % len(lifecycles)]) for i in range(120)]
    return sim, ours


def half() -> float:
    return 0.5


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def client(server: SimulatorServer, clock: ManualClock) -> BatchApiClient:
    return BatchApiClient(
        ApiSettings(api_key=Secret(KEY), base_url=server.url),
        policy=RetryPolicy(max_in_process_attempts=1),
        sleep=lambda _seconds: None,
        clock=clock,
    )


def batch_rows(db: Database, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    with db.transaction() as session:
        rows = session.scalars(select(Batch).where(Batch.id.in_(ids))).all()
        return {
            row.id: (
                row.status,
                *(getattr(row, name) for name in TIMESTAMP_FIELDS),
                row.request_counts_total,
                row.request_counts_completed,
                row.request_counts_failed,
                row.output_file_id is not None,
                row.error_file_id is not None,
                row.harvest_state,
                row.results_stored,
                row.poll_failures,
            )
            for row in rows
        }


def events(db: Database, ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    with db.transaction() as session:
        rows = session.scalars(
            select(BatchEvent).where(BatchEvent.batch_id.in_(ids)).order_by(BatchEvent.id)
        ).all()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for e in rows:
        out.setdefault(e.batch_id, []).append((e.kind, e.from_status, e.to_status, e.server_at))
    return out


def schedule(db: Database, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    """What the poll rules wrote beside the server's facts: the next poll, overdue,
    counts of polls, the lease kept for a harvest, and each cancel request."""
    with db.transaction() as session:
        rows: dict[str, tuple[Any, ...]] = {
            row.id: (
                row.next_poll_at,
                row.overdue_since,
                row.polls,
                row.terminal_polls,
                row.last_polled_at,
                row.status_changed_at,
                row.version,
                row.harvested_at,
                row.lease_owner is not None,
                row.lease_expires_at,
            )
            for row in session.scalars(select(Batch).where(Batch.id.in_(ids)))
        }
        for request in session.scalars(select(CancelRequest)):
            rows[request.batch_id] += (request.state, request.outcome, request.terminal_status)
        return rows


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Database]]:
    """Two empty, migrated databases on one backend."""
    if request.param == "sqlite":
        dbs = [fresh_database(tmp_path, "list"), fresh_database(tmp_path, "get")]
        yield dbs
    else:
        template = request.getfixturevalue("pg_template")
        with (
            _scratch_pg("orch_listobs", template) as one,
            _scratch_pg("orch_listobs", template) as two,
        ):
            dbs = [Database.connect(one), Database.connect(two)]
            yield dbs
    for db in dbs:
        db.dispose()


def lease(db: Database, ids: list[str], owner: str, now: datetime) -> None:
    """Lease these batches, as a claim before a GET does."""
    polls = PollStore(db)
    with db.transaction() as session:
        polls.leases.claim(
            session,
            owner,
            now=now,
            lease_seconds=60,
            due=Batch.id.in_(ids),
            order_by=[Batch.id],
            limit=len(ids),
        )


def test_a_page_records_what_gets_of_its_batches_would_at_that_moment(
    two_databases: list[Database], clock: ManualClock
) -> None:
    sim, ours = account(clock)
    for i in range(20):  # long finalizing: overdue, then over (and its events)
        ours.append(sim.create_batch(3, Scenario(running_s=10, finalizing_s=200 + 10 * i)))
    for batch_id in ours[5:40:4]:  # cancelled by someone else: they end cancelled
        sim.api_cancel(batch_id)
    by_list, by_get = two_databases
    for db in (by_list, by_get):
        BatchStore(db).track(ours, now=clock.now(), source="track")
        # Cancels asked of a third: each closes, as cancelled or too late, when it ends.
        CancelStore(db).request(ours[::3], now=clock.now(), requested_by="test")
    policy = PollPolicy(overdue_finalizing_seconds=60, overdue_cancelling_seconds=60)
    start, seen = clock.now(), 0
    for moment in (1, 30, 65, 130, 250, 400):
        clock.set(start + timedelta(seconds=moment))
        page = sim.api_list(None, 100)["data"] + sim.api_list(ours[-100], 100)["data"]
        observed = [parse_batch(item) for item in page]
        listed = ListPollStore(PollStore(by_list)).record_page(
            observed, now=clock.now(), owner="lister", policy=policy, lease_seconds=60, u=half
        )
        recorded = {r.batch_id for r in listed}
        assert recorded <= set(ours)  # never a batch we do not track
        seen += len(recorded)
        polls = PollStore(by_get)
        lease(by_get, sorted(recorded), "getter", clock.now())
        for o in observed:
            if o.id in recorded:  # in flight when listed: ended ones are left to GETs
                polls.record_poll(
                    o, now=clock.now(), owner="getter", policy=policy, lease_seconds=60, u=0.5
                )
    assert seen > 300
    assert batch_rows(by_list, ours) == batch_rows(by_get, ours)
    assert schedule(by_list, ours) == schedule(by_get, ours)
    listed_events = events(by_list, ours)
    assert listed_events == events(by_get, ours)
    kinds = {e[0] for evs in listed_events.values() for e in evs}
    # the kinds of event an in-flight batch's poll records were recorded, and alike
    assert kinds >= {"status", "cancel_closed", "overdue", "overdue_ended"}


def run_to_the_end(
    tmp_path: Path, name: str, list_min_tracked: int
) -> tuple[dict[str, tuple[Any, ...]], dict[str, list[tuple[Any, ...]]], int, int]:
    clock = ManualClock()
    sim, ours = account(clock)
    db = fresh_database(tmp_path, name)
    tracked = [*ours, UNLISTED]
    BatchStore(db).track(tracked, now=clock.now(), source="track")
    pages = 0
    with SimulatorServer(sim) as server:
        api = client(server, clock)
        config = ReconcilerConfig(concurrency=4, list_min_tracked=list_min_tracked)
        with Reconciler(db, api, config, clock, "reconciler", random_unit=lambda: 0.5) as r:
            for step in range(90):
                if step == 3:  # newer batches push ours off the first pages
                    for _ in range(150):
                        sim.create_batch(2, Scenario(running_s=5000))
                pages += r.run_once().list_pages
                clock.advance(10)
        api.close()
    requests = sim.counters()["requests_total"]
    gets = int(requests.get("retrieve", 0)) + int(requests.get("list", 0))
    rows, evs = batch_rows(db, tracked), events(db, tracked)
    db.dispose()
    return rows, evs, gets, pages


def test_observing_through_the_list_ends_where_single_gets_end(tmp_path: Path) -> None:
    by_list, list_events, list_gets, pages = run_to_the_end(tmp_path, "list", list_min_tracked=1)
    by_get, get_events, get_gets, no_pages = run_to_the_end(tmp_path, "get", list_min_tracked=0)
    assert no_pages == 0 and pages > 0
    assert {row[0] for row in by_get.values()} >= {"completed", "failed", "expired"}
    assert by_list == by_get  # statuses, the server's timestamps, results, failures
    assert list_events == get_events
    assert list_gets < get_gets / 3  # and far fewer requests, the pages counted
