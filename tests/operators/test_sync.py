"""`orchestrator sync` against the simulator on 127.0.0.1, over several pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.clock import ManualClock
from orchestrator.core.observation import BatchObservation
from orchestrator.db.batches import BatchStore, Recorded
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent
from orchestrator.processes.sync import BatchSync, SyncReport
from orchestrator.simulator import DEFAULT_API_KEY, Simulator, SimulatorConfig, SimulatorServer
from tests.hostile.server import batch_object

from .conftest import Run, as_json


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    simulator = Simulator(SimulatorConfig(seed=11), clock)
    with SimulatorServer(simulator) as server:
        monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_API_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        yield simulator


def make_fleet(sim: Simulator, count: int) -> dict[str, list[str]]:
    """A third each validating, in progress and completed (scenario: 2 s, 60 s, 2 s)."""
    made: dict[str, list[str]] = {"validating": [], "in_progress": [], "completed": []}
    for n in range(count):
        status, age = (("validating", 0.0), ("in_progress", 30.0), ("completed", 100.0))[n % 3]
        made[status].append(sim.create_batch(3, age_s=age, metadata={"owner": f"etl-{n % 2}"}))
    return made


def rows(db: Database) -> dict[str, Batch]:
    with db.transaction() as session:
        return {b.id: b for b in session.scalars(select(Batch))}


def test_every_page_is_recorded_through_the_state_machine(
    database: Database, run: Run, sim: Simulator
) -> None:
    made = make_fleet(sim, 25)
    code, out, _ = run("sync", "--page-size", "10", "--json")
    assert code == 0
    report = as_json(out)
    assert (report["seen"], report["new"], report["pages"]) == (25, 25, 3)
    assert report["stopped_at_page_limit"] is False
    assert sim.served("list") == 3
    stored = rows(database)
    assert set(stored) == {i for ids in made.values() for i in ids}
    for status, ids in made.items():
        assert {stored[i].status for i in ids} == {status}
    assert all(stored[i].tracked_by == "sync" for i in stored)
    # running batches are followed by the reconciler; finished ones only recorded
    assert all(stored[i].next_poll_at is not None for i in made["in_progress"])
    assert all(stored[i].next_poll_at is None for i in made["completed"])
    assert report["new_finished_not_followed"] == len(made["completed"])
    assert stored[made["in_progress"][0]].metadata_ in ({"owner": "etl-0"}, {"owner": "etl-1"})


def test_a_second_sync_reports_what_changed(
    database: Database, run: Run, sim: Simulator, clock: ManualClock
) -> None:
    made = make_fleet(sim, 6)
    run("sync")
    code, out, _ = run("sync", "--json")
    assert (as_json(out)["new"], as_json(out)["updated"], as_json(out)["unchanged"]) == (0, 0, 6)
    clock.advance(200)  # everything runs to completion
    code, out, _ = run("sync")
    assert code == 0
    assert "synced 6 batch(es) from 1 page(s): 0 new, 4 updated, 2 unchanged" in out
    with database.transaction() as session:
        moves = session.execute(
            select(BatchEvent.from_status, BatchEvent.to_status).where(
                BatchEvent.batch_id == made["validating"][0],
                BatchEvent.kind == "status",
                BatchEvent.source == "sync",
            )
        ).all()
    # the machine walks every step, even ones the list never showed
    assert [tuple(m) for m in moves] == [
        (None, "validating"),
        ("validating", "in_progress"),
        ("in_progress", "finalizing"),
        ("finalizing", "completed"),
    ]


def test_limit_pages_stops_early_and_says_so(database: Database, run: Run, sim: Simulator) -> None:
    make_fleet(sim, 25)
    code, out, _ = run("sync", "--page-size", "10", "--limit-pages", "2")
    assert code == 0
    assert "synced 20 batch(es) from 2 page(s)" in out
    assert "stopped at --limit-pages" in out
    assert sim.served("list") == 2  # the third page was never asked for


def test_more_than_a_full_page_of_the_api(database: Database, run: Run, sim: Simulator) -> None:
    make_fleet(sim, 130)
    code, out, _ = run("sync", "--json")
    assert code == 0
    assert (as_json(out)["seen"], as_json(out)["pages"]) == (130, 2)
    assert len(rows(database)) == 130


def test_synced_batches_can_be_selected_for_a_cancel(
    database: Database, run: Run, sim: Simulator
) -> None:
    made = make_fleet(sim, 6)
    run("sync")
    _, out, _ = run("cancel", "--json", "--dry-run", "--metadata", "owner=etl-0")
    plan = as_json(out)
    chosen = {p["batch_id"] for p in plan["to_cancel"]}
    skipped = {p["batch_id"] for p in plan["skipped"]}
    # etl-0 are batches 0, 2, 4: validating, completed, in_progress
    assert chosen == {made["validating"][0], made["in_progress"][1]}
    assert skipped == {made["completed"][0]}


def test_a_missing_key_is_a_usage_error(
    database: Database, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, _, err = run("sync")
    assert code == 2 and "OPENAI_API_KEY is not set" in err


def test_track_of_a_finished_batch_sync_found_harvests_it(
    database: Database, run: Run, sim: Simulator
) -> None:
    """Issue #14: `track` said "already known" and did nothing; `results` said "waiting"."""
    made = make_fleet(sim, 3)
    (finished,) = made["completed"]
    run("sync")
    assert rows(database)[finished].harvest_state == "waiting"
    code, out, _ = run("track", finished[:12], "--json")
    assert code == 0
    assert as_json(out)["to_harvest"] == [finished]
    assert run("reconcile", "--once")[0] in (0, 1)
    batch = rows(database)[finished]
    assert batch.harvest_state == "done" and batch.results_stored == 3
    _, out, _ = run("track", finished, "--json")  # harvested: nothing more to ask
    assert as_json(out)["to_harvest"] == []


def test_harvest_finished_after_a_plain_sync_harvests_what_it_recorded(
    database: Database, run: Run, sim: Simulator
) -> None:
    """`--harvest-finished` promises the results of batches that ended before we first saw
    them: it did nothing for those an earlier plain sync had recorded (not followed)."""
    made = make_fleet(sim, 3)
    (finished,) = made["completed"]
    run("sync")
    assert rows(database)[finished].next_poll_at is None  # recorded, not followed
    code, out, _ = run("sync", "--harvest-finished", "--json")
    assert code == 0
    assert run("reconcile", "--once")[0] in (0, 1)
    batch = rows(database)[finished]
    assert batch.harvest_state == "done" and batch.results_stored == 3
    assert as_json(out)["known_finished_to_harvest"] == 1
    with database.transaction() as session:
        asked = session.scalars(
            select(BatchEvent.source).where(
                BatchEvent.batch_id == finished, BatchEvent.kind == "harvest_requested"
            )
        ).all()
    assert asked == ["sync"]
    code, out, _ = run("sync", "--harvest-finished")  # harvested: nothing more to ask
    assert code == 0 and "never harvested" not in out


def test_a_batch_tracked_elsewhere_while_sync_records_its_page_keeps_its_polls(
    database: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orchestrator track X` on another host after sync read which batches it knew, before
    X's own transaction: sync took X for new and, X having ended, stopped its polls over
    the ones track had just given it. X was never harvested."""
    batch_id = "batch_" + "7" * 32
    syncer = BatchSync(database, harvest_finished=False)
    record = syncer.store.record_observation

    def tracked_elsewhere_first(observed: BatchObservation, **options: Any) -> Recorded:
        BatchStore(database).track([observed.id], now=clock.now(), source="track")
        return record(observed, **options)

    monkeypatch.setattr(syncer.store, "record_observation", tracked_elsewhere_first)
    page = [batch_object(batch_id, "completed", completed_at=1_767_225_700, output_file_id="f")]
    report = SyncReport()
    syncer.record_page(page, clock.now(), report)
    batch = rows(database)[batch_id]
    assert batch.tracked_by == "track" and batch.status == "completed"
    assert batch.next_poll_at is not None, "a tracked batch that ended is never harvested"
    assert (report.new, report.new_finished_not_followed) == (0, 0)
