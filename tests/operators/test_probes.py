"""/healthz and /readyz on the metrics port: fed by the loops, flipping when they should."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from orchestrator.clock import ManualClock, utcnow
from orchestrator.db import migrate
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.metrics import MetricsServer, serve_metrics, start_process_metrics
from orchestrator.probes import Heartbeat, Probes, Readiness
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.settings import Settings
from tests.conftest import _admin_conninfo
from tests.integration.conftest import make_client

Get = Callable[[str], tuple[int, str]]
PORT_ZERO = {"metrics_port": 0, "metrics_address": "127.0.0.1"}


@pytest.fixture
def servers() -> Iterator[list[MetricsServer]]:
    started: list[MetricsServer] = []
    yield started
    for server in started:
        server.close()


def serve(db_url: str, probes: Probes, servers: list[MetricsServer]) -> Get:
    server = serve_metrics(
        Settings(database_url=db_url, **PORT_ZERO),  # type: ignore[arg-type]
        CollectorRegistry(),
        probes,
    )
    assert server is not None
    servers.append(server)

    def get(path: str) -> tuple[int, str]:
        response = httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)
        return response.status_code, response.text

    return get


def test_healthz_fails_once_the_loop_misses_its_deadline(servers: list[MetricsServer]) -> None:
    clock = ManualClock()
    heartbeat = Heartbeat(clock, stale_seconds=60)
    get = serve("sqlite:///unused.sqlite3", Probes(heartbeat, None), servers)
    assert get("/healthz")[0] == 200
    clock.advance(61)
    code, text = get("/healthz")
    assert code == 503 and "stalled: the loop last turned 61s ago" in text
    heartbeat.beat(busy_for=600)  # about to wait 10 minutes on purpose (e.g. a 401 back-off)
    clock.advance(600)
    assert get("/healthz")[0] == 200
    clock.advance(61)
    assert get("/healthz")[0] == 503
    assert get("/readyz")[0] == 200  # no readiness check given: nothing to refuse


class Stuck(httpx.BaseTransport):
    """A transport whose requests hang until released (a call that never comes back)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        assert self.release.wait(timeout=30), "never released"
        return httpx.Response(500, json={"error": {"message": "late"}})


def test_a_reconciler_stuck_in_a_call_turns_healthz_red_and_green_again(
    database: Database, db_url: str, servers: list[MetricsServer]
) -> None:
    clock = ManualClock(utcnow())
    BatchStore(database).track(["batch_stuck"], now=clock.now(), source="track")
    transport = Stuck()
    client = make_client("http://127.0.0.1:9/v1", clock, transport=transport, attempts=1)
    heartbeat = Heartbeat(clock, stale_seconds=60)
    reconciler = Reconciler(
        database, client, ReconcilerConfig(concurrency=1), clock, "r", heartbeat=heartbeat
    )
    get = serve(db_url, Probes(heartbeat, Readiness(database, clock=clock)), servers)
    passes = threading.Thread(target=reconciler.run_once)
    passes.start()
    try:
        assert transport.entered.wait(timeout=30)
        assert get("/healthz")[0] == 200  # it beat as it started the pass
        clock.advance(61)  # ... and has not come back since
        assert get("/healthz")[0] == 503
    finally:
        transport.release.set()
        passes.join(timeout=30)
        reconciler.close()
        client.close()
    assert not passes.is_alive()
    assert get("/healthz")[0] == 200  # the loop turned again
    assert get("/readyz") == (200, "ok\n")


def test_readyz_fails_while_sending_is_paused(
    database: Database, db_url: str, servers: list[MetricsServer]
) -> None:
    clock = ManualClock()
    get = serve(db_url, Probes(None, Readiness(database, clock=clock, cache_seconds=0)), servers)
    assert get("/readyz")[0] == 200
    now = utcnow()
    CancelStore(database).pause("HTTP 401", now=now, until=now + timedelta(hours=1))
    code, text = get("/readyz")
    assert code == 503 and "sending paused until" in text
    CancelStore(database).resume(now=now)
    assert get("/readyz")[0] == 200


def test_readyz_fails_on_a_database_behind_the_code(
    sqlite_url: str, servers: list[MetricsServer]
) -> None:
    db = Database.connect(sqlite_url)
    get = serve(sqlite_url, Probes(None, Readiness(db, cache_seconds=0)), servers)
    assert get("/readyz")[0] == 200
    migrate.downgrade(db.engine, "-1")  # one revision behind
    code, text = get("/readyz")
    assert code == 503 and "needs" in text
    db.dispose()


@pytest.mark.postgres
def test_readyz_fails_when_the_database_goes_away_and_metrics_still_answer(
    pg_url: str, servers: list[MetricsServer]
) -> None:
    db = Database.connect(pg_url)
    settings = Settings(database_url=pg_url, **PORT_ZERO)  # type: ignore[arg-type]
    clock = ManualClock()
    heartbeat = Heartbeat(clock)
    _, server = start_process_metrics(settings, db, heartbeat=heartbeat, process="worker")
    assert server is not None
    servers.append(server)
    base = f"http://127.0.0.1:{server.port}"
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200

    name = make_url(pg_url).database
    with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    clock.advance(2)  # past the one-second cache

    response = httpx.get(f"{base}/readyz", timeout=30)
    assert response.status_code == 503 and "database unavailable" in response.text
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # alive, not ready
    scraped = httpx.get(f"{base}/metrics", timeout=30).text
    assert "orchestrator_database_up 0.0" in scraped
    assert 'orchestrator_loop_deadline_timestamp_seconds{process="worker"}' in scraped
    db.dispose()
