"""The reconciler against a real simulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select, update

from orchestrator.clock import ManualClock
from orchestrator.core.observation import parse_batch
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent, CancelRequest, ResultFile
from orchestrator.simulator import FaultRule, Scenario
from tests.worker.fake_api import batch_body

from .conftest import ReconcilerFactory, Sim, expected_outcomes, stored_outcomes, track


def row(database: Database, batch_id: str) -> Batch:
    with database.transaction() as session:
        found = session.get(Batch, batch_id)
        assert found is not None
        return found


def files(database: Database, batch_id: str) -> dict[str, ResultFile]:
    with database.transaction() as session:
        rows = session.scalars(select(ResultFile).where(ResultFile.batch_id == batch_id))
        return {f.kind: f for f in rows}


def event_kinds(database: Database, batch_id: str) -> list[str]:
    with database.transaction() as session:
        rows = session.scalars(
            select(BatchEvent.kind).where(BatchEvent.batch_id == batch_id).order_by(BatchEvent.id)
        )
        return list(rows)


def request_cancel(database: Database, clock: ManualClock, batch_id: str) -> None:
    with database.transaction() as session:
        session.add(
            CancelRequest(batch_id=batch_id, requested_at=clock.now(), state="accepted", attempts=1)
        )


def test_cancelled_batch_keeps_every_partial_result_exactly(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(1000, cancel_after_s=30)
    track(database, clock, batch_id)
    request_cancel(database, clock, batch_id)
    r = reconciler()

    clock.advance(31)  # cancelling (the cancel landed at 30 s)
    first = r.run_once()
    assert (first.polled, first.became_terminal) == (1, 0)
    assert row(database, batch_id).status == "cancelling"
    assert row(database, batch_id).next_poll_at == clock.now() + timedelta(seconds=5)
    assert r.run_once().claimed == 0  # not due yet

    clock.advance(5)  # cancelled 5 s after the cancel
    second = r.run_once()
    assert second.became_terminal == 1 and second.harvested == 1
    assert second.cancels_closed == {batch_id: "cancelled"}

    truth = expected_outcomes(sim.simulator, batch_id)
    assert "error:batch_cancelled" in truth.values() and "output" in truth.values()
    assert stored_outcomes(database, batch_id) == truth  # every line, once, in the right place
    stored = row(database, batch_id)
    assert (stored.status, stored.harvest_state) == ("cancelled", "done")
    assert stored.results_stored == 1000 == second.results_stored
    assert stored.result_line_errors == 0
    assert stored.next_poll_at is None and stored.lease_owner is None
    assert stored.request_counts_total == 1000
    for kind, result_file in files(database, batch_id).items():
        content = sim.simulator.file_content(result_file.file_id).read()
        assert result_file.state == "done", kind
        assert result_file.bytes == len(content)
        assert result_file.lines == result_file.lines_committed == content.count(b"\n")
        assert result_file.sha256 == hashlib.sha256(content).hexdigest()
        assert (result_file.duplicates, result_file.malformed, result_file.attempts) == (0, 0, 1)
    with database.transaction() as session:
        request = session.get(CancelRequest, batch_id)
        assert request is not None
        assert (request.state, request.outcome, request.terminal_status) == (
            "closed",
            "cancelled",
            "cancelled",
        )
        assert request.seconds_to_terminal == 35.0  # our request at 0 s, cancelled_at 35 s
    assert event_kinds(database, batch_id)[-2:] == ["cancel_closed", "harvested"]
    assert r.run_once().claimed == 0  # nothing more to do, ever
    assert sim.simulator.served("content") == 2


def test_a_cancel_that_lost_the_race_closes_too_late_and_keeps_the_results(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(
        200, Scenario(cancel_outcome="completed"), cancel_after_s=30
    )
    track(database, clock, batch_id)
    request_cancel(database, clock, batch_id)
    clock.advance(40)
    summary = reconciler().run_once()
    assert summary.cancels_closed == {batch_id: "too_late:completed"}
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)
    assert row(database, batch_id).results_stored == 200
    with database.transaction() as session:
        request = session.get(CancelRequest, batch_id)
        assert request is not None and request.outcome == "too_late:completed"


def test_file_ids_that_appear_a_poll_after_the_terminal_status(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(100, Scenario(file_ids_lag_polls=1), age_s=100)
    track(database, clock, batch_id)
    r = reconciler()
    first = r.run_once()
    stored = row(database, batch_id)
    assert (first.became_terminal, stored.status, stored.harvest_state) == (
        1,
        "completed",
        "pending",
    )
    assert stored.output_file_id is None and stored.terminal_polls == 1
    assert stored.next_poll_at == clock.now() + timedelta(seconds=5)
    clock.advance(5)
    second = r.run_once()
    assert second.harvested == 1
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)
    assert row(database, batch_id).harvest_state == "done"


def test_a_batch_without_any_file_is_done_after_the_repolls(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(10, Scenario(fail_validation=True), age_s=100)
    track(database, clock, batch_id)
    r = reconciler()
    for _ in range(4):  # the poll that saw it failed, then file_id_repolls (3) more
        assert row(database, batch_id).harvest_state in ("waiting", "pending")
        assert r.run_once().polled == 1
        clock.advance(5)
    stored = row(database, batch_id)
    assert (stored.status, stored.harvest_state, stored.results_stored) == ("failed", "done", 0)
    assert stored.next_poll_at is None and stored.harvested_at is not None
    assert r.run_once().claimed == 0
    assert sim.simulator.served("retrieve", batch_id) == 4


def test_an_empty_string_file_id_is_no_file(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    scenario = Scenario(empty_string_error_file=True, failed_request_ratio=0.0)
    batch_id = sim.simulator.create_batch(50, scenario, age_s=100)
    assert sim.simulator.batch(batch_id)["error_file_id"] == ""
    track(database, clock, batch_id)
    summary = reconciler().run_once()
    assert summary.harvested == 1 and summary.files_done == 1
    stored = row(database, batch_id)
    assert stored.error_file_id is None and stored.results_stored == 50
    assert list(files(database, batch_id)) == ["output"]
    assert sim.simulator.served("content") == 1  # never GET /files//content


def test_a_download_cut_off_halfway_is_resumed_from_the_checkpoint(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(1000, Scenario(failed_request_ratio=0.0), age_s=100)
    track(database, clock, batch_id)
    sim.simulator.add_fault(FaultRule(kind="truncate", endpoint="content", fraction=0.5))
    sim.simulator.add_fault(FaultRule(kind="drop_mid", endpoint="content", fraction=0.8))
    summary = reconciler(chunk_lines=64, read_bytes=4096).run_once()
    assert summary.harvested == 1 and summary.results_stored == 1000
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)
    output = files(database, batch_id)["output"]
    content = sim.simulator.file_content(output.file_id).read()
    assert output.attempts == 3 and output.duplicates == 0 and output.malformed == 0
    assert output.lines == output.lines_committed == 1000
    assert output.sha256 == hashlib.sha256(content).hexdigest()
    assert sim.simulator.served("content") == 3


def test_a_file_that_keeps_failing_is_retried_later_and_flagged(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(300, Scenario(failed_request_ratio=0.0), age_s=100)
    track(database, clock, batch_id)
    sim.simulator.add_fault(FaultRule(kind="truncate", endpoint="content", times=3))
    r = reconciler(chunk_lines=50, download_attempts=3, read_bytes=4096)
    summary = r.check_attention(r.run_once())
    assert summary.files_failed and summary.needs_attention
    stored = row(database, batch_id)
    assert stored.harvest_state == "retrying" and stored.lease_owner is None
    assert stored.last_error is not None and "download 3 failed" in stored.last_error
    assert stored.next_poll_at == clock.now() + timedelta(seconds=10)
    assert 0 < files(database, batch_id)["output"].lines_committed < 300  # kept what it got
    clock.advance(10)
    again = r.check_attention(r.run_once())
    assert again.harvested == 1 and not again.needs_attention
    assert again.polled == 0  # a terminal batch with known files is not polled again
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)
    assert row(database, batch_id).harvest_state == "done"


def test_a_missing_file_is_flagged_and_the_other_file_still_harvested(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(400, age_s=100)
    track(database, clock, batch_id)
    output_id = sim.simulator.batch(batch_id)["output_file_id"]
    sim.simulator.add_fault(
        FaultRule(kind="status", status=404, endpoint="content", file_id=output_id, times=None)
    )
    r = reconciler()
    summary = r.check_attention(r.run_once())
    assert summary.needs_attention and len(summary.files_missing) == 1
    assert summary.attention is not None
    assert [(f[1], f[2]) for f in summary.attention.files] == [(output_id, "missing")]
    stored = row(database, batch_id)
    assert stored.harvest_state == "missing" and stored.next_poll_at is None
    assert stored.last_error is not None and "404" in stored.last_error
    kinds = files(database, batch_id)
    assert kinds["output"].state == "missing" and kinds["error"].state == "done"
    errors_only = {
        k: v for k, v in expected_outcomes(sim.simulator, batch_id).items() if v != "output"
    }
    assert stored_outcomes(database, batch_id) == errors_only
    assert stored.results_stored == len(errors_only)
    assert "harvest_incomplete" in event_kinds(database, batch_id)


def test_poll_failures_back_off_and_never_fail_the_batch(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(10)
    track(database, clock, batch_id)
    sim.simulator.add_fault(FaultRule(kind="status", status=503, endpoint="retrieve", times=4))
    r = reconciler()
    assert r.run_once().poll_failures == 1
    stored = row(database, batch_id)
    assert (
        stored.status is None and stored.poll_failures == 1 and "503" in (stored.last_error or "")
    )
    assert stored.next_poll_at == clock.now() + timedelta(seconds=10)
    clock.advance(10)
    r.run_once()
    stored = row(database, batch_id)
    assert stored.poll_failures == 2 and stored.next_poll_at == clock.now() + timedelta(seconds=20)
    clock.advance(20)
    assert r.run_once().polled == 1  # the faults are used up
    stored = row(database, batch_id)
    assert (stored.status, stored.poll_failures, stored.last_error) == ("in_progress", 0, None)
    assert event_kinds(database, batch_id).count("poll_failed") == 1


def test_a_batch_the_api_never_knew_is_let_go_after_an_hour_of_404s(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    """A mistyped id is not polled forever; a batch seen once is never let go; seeing
    it, or tracking it again, follows it again."""
    real = sim.simulator.create_batch(5, Scenario(running_s=1e6))
    track(database, clock, "batch_mistyped", real)
    r = reconciler()
    summaries = []
    for _ in range(7):  # at 0, 10, 20, ... 60 minutes
        summaries.append(r.run_once())
        clock.advance(600)  # past any backoff
    assert [s.unknown for s in summaries] == [[]] * 6 + [["batch_mistyped"]]
    assert summaries[-1].needs_attention and not summaries[0].needs_attention
    stored = row(database, "batch_mistyped")
    assert stored.next_poll_at is None and stored.lease_owner is None
    assert stored.last_error is not None and "no such batch for this key" in stored.last_error
    assert event_kinds(database, "batch_mistyped").count("poll_stopped") == 1
    served = sim.simulator.served("retrieve", "batch_mistyped")
    r.run_once()
    assert sim.simulator.served("retrieve", "batch_mistyped") == served  # not asked again

    track(database, clock, "batch_mistyped")  # the operator asks again: polled again
    assert row(database, "batch_mistyped").next_poll_at == clock.now()
    r.run_once()
    assert sim.simulator.served("retrieve", "batch_mistyped") == served + 1
    with database.transaction() as session:  # let go again, then seen (e.g. by sync)
        session.execute(update(Batch).where(Batch.id == "batch_mistyped").values(next_poll_at=None))
    BatchStore(database).record_observation(
        parse_batch(batch_body("batch_mistyped", "in_progress")), now=clock.now(), source="sync"
    )
    assert row(database, "batch_mistyped").next_poll_at == clock.now()

    sim.simulator.add_fault(
        FaultRule(kind="status", status=404, endpoint="retrieve", batch_id=real, times=None)
    )
    for _ in range(4):
        assert r.run_once().unknown == []
        clock.advance(600)
    seen = row(database, real)
    assert (seen.status, seen.poll_failures) == ("in_progress", 3)  # first turn: not yet due
    assert seen.next_poll_at is not None  # seen once: polled on, however often it is denied


def test_a_refused_key_stops_the_pass_and_needs_a_person(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    ids = [sim.simulator.create_batch(5) for _ in range(3)]
    track(database, clock, *ids)
    r = reconciler(client=sim.client(clock, key="sk-wrong"), concurrency=1)
    summary = r.run_once()
    assert summary.auth_error is not None and "401" in summary.auth_error
    assert summary.needs_attention
    assert sim.simulator.served("retrieve") == 1  # no hammering with a key that is refused
    assert summary.released == 2
    with database.transaction() as session:
        assert session.scalars(select(Batch.lease_owner)).all() == [None, None, None]


def test_an_overdue_cancel_is_flagged_once_and_polling_goes_on(
    database: Database, sim: Sim, clock: ManualClock, reconciler: ReconcilerFactory
) -> None:
    batch_id = sim.simulator.create_batch(20, Scenario(cancelling_s=3600.0), cancel_after_s=10)
    track(database, clock, batch_id)
    clock.advance(11)
    r = reconciler()
    r.run_once()
    for _ in range(25):
        clock.advance(30)
        summary = r.check_attention(r.run_once())
    assert summary.attention is not None
    (overdue,) = summary.attention.overdue
    assert overdue[:2] == (batch_id, "cancelling")
    stored = row(database, batch_id)
    assert stored.overdue_since is not None and stored.status == "cancelling"
    assert event_kinds(database, batch_id).count("overdue") == 1
    clock.advance(3600)
    r.run_once()
    stored = row(database, batch_id)
    assert stored.status == "cancelled" and stored.overdue_since is None
    assert event_kinds(database, batch_id).count("overdue_ended") == 1
