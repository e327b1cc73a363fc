"""`orchestrator reconcile` end to end, and the long-running loop."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from orchestrator.cli.main import main
from orchestrator.clock import ManualClock
from orchestrator.db.database import Database
from orchestrator.db.polls import PollStore
from orchestrator.errors import DatabaseUnavailable
from orchestrator.simulator import DEFAULT_API_KEY, FaultRule

from .conftest import (
    ReconcilerFactory,
    Sim,
    expected_outcomes,
    harvest_done,
    stored_outcomes,
    track,
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, sim: Sim) -> str:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", sim.server.url)
    monkeypatch.delenv("ORCHESTRATOR_CONFIG", raising=False)
    return sqlite_url


def test_a_missing_key_is_named(
    env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    assert main(["reconcile", "--once"]) == 2
    assert "OPENAI_API_KEY is not set" in capsys.readouterr().err


def test_once_exits_0_when_all_is_well_and_1_with_the_reasons_when_not(
    env: str, sim: Sim, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    good = sim.simulator.create_batch(30, age_s=100)
    bad = sim.simulator.create_batch(30, age_s=100)
    database = Database.connect(env)
    track(database, clock, good)
    assert main(["reconcile", "--once", "--concurrency", "2"]) == 0
    assert "1 batch(es) claimed" in capsys.readouterr().err
    assert stored_outcomes(database, good) == expected_outcomes(sim.simulator, good)

    missing = sim.simulator.batch(bad)["output_file_id"]
    sim.simulator.add_fault(
        FaultRule(kind="status", status=404, endpoint="content", file_id=missing, times=None)
    )
    track(database, clock, bad)
    assert main(["reconcile", "--once", "--json"]) == 1
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["needs_attention"] is True
    assert report["unharvested_files"][0]["file_id"] == missing
    assert report["unharvested_files"][0]["state"] == "missing"
    assert main(["reconcile", "--once"]) == 1  # still needs a person on the next run
    assert "file missing" in capsys.readouterr().err
    database.dispose()


def test_run_forever_rides_out_a_database_outage_and_stops_on_request(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch_id = sim.simulator.create_batch(200, age_s=100)
    track(database, clock, batch_id)
    r = reconciler(idle_seconds=0.01, db_retry_initial_seconds=0.001)
    real_claim = PollStore.claim_due
    outages = [2]
    stop = threading.Event()

    def flaky_claim(self: PollStore, **kwargs: Any) -> Any:
        if outages[0] > 0:
            outages[0] -= 1
            raise DatabaseUnavailable("database unavailable: connection refused")
        claims = real_claim(self, **kwargs)
        if not claims and harvest_done(database, batch_id):
            stop.set()  # everything done: ask the loop to end, as SIGTERM would
        return claims

    monkeypatch.setattr(PollStore, "claim_due", flaky_claim)
    total = r.run_forever(stop)
    assert total.stopped and total.db_outages == 2
    assert total.harvested == 1 and total.results_stored == 200
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)


def test_a_stop_mid_harvest_keeps_the_checkpoint_and_gives_the_lease_back(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(500, age_s=100)
    track(database, clock, batch_id)
    r = reconciler(chunk_lines=50, read_bytes=2048)
    original = r.results.commit_chunk

    def stop_after_first(**kwargs: Any) -> Any:
        counts = original(**kwargs)
        r.stop.set()
        return counts

    r.results.commit_chunk = stop_after_first  # type: ignore[method-assign]
    summary = r.run_once()
    assert summary.harvested == 0 and summary.released == 1 and summary.results_stored > 0
    with database.transaction() as session:
        from orchestrator.db.models import Batch

        row = session.get(Batch, batch_id)
        assert row is not None and row.lease_owner is None and row.harvest_state == "pending"
    r.stop.clear()
    r.results.commit_chunk = original  # type: ignore[method-assign]
    assert r.run_once().harvested == 1
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)


def test_once_with_cleanup_on_deletes_the_files_it_just_harvested(
    env: str,
    sim: Sim,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch_id = sim.simulator.create_batch(40, age_s=100, cancel_after_s=30)
    view = sim.simulator.batch(batch_id)
    database = Database.connect(env)
    track(database, clock, batch_id)
    monkeypatch.setenv("ORCHESTRATOR_CLEANUP_RESULT_FILES", "true")
    assert main(["reconcile", "--once"]) == 0
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)
    held = set(sim.simulator.file_ids())
    assert view["output_file_id"] not in held and view["error_file_id"] not in held
    assert view["input_file_id"] in held  # a separate setting
    monkeypatch.setenv("ORCHESTRATOR_CLEANUP_INPUT_FILES", "1")
    assert main(["reconcile", "--once"]) == 0
    assert view["input_file_id"] not in set(sim.simulator.file_ids())
    database.dispose()
