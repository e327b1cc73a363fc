"""Recording cancel requests in bulk: every case decided per id, across chunk boundaries,
with a number of statements that grows with chunks of ids, not with ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import event, select, update

from orchestrator.core.observation import parse_batch
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CHUNK, CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import BatchEvent, CancelRequest
from tests.worker.fake_api import batch_body

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


def ids(prefix: str, count: int) -> list[str]:
    return [f"batch_{prefix}{n:05d}" for n in range(count)]


def test_every_case_is_decided_per_id_across_chunks(database: Database) -> None:
    store = CancelStore(database)
    pending, failed = ids("pending", 300), ids("failed", 300)
    store.request(pending + failed, now=T0, requested_by="first")
    with database.transaction() as session:
        session.execute(
            update(CancelRequest)
            .where(CancelRequest.batch_id.in_(failed))
            .values(state="failed", outcome="not_found")
        )
    cancelling, completed = ids("cancelling", 3), ids("completed", 3)
    batches = BatchStore(database)
    for batch_id in cancelling:
        batches.record_observation(
            parse_batch(batch_body(batch_id, "cancelling")), now=T0, source="test"
        )
    for batch_id in completed:
        body = batch_body(batch_id, "completed", in_progress_at=1_767_225_650)
        body.update(finalizing_at=1_767_225_700, completed_at=1_767_225_800)
        batches.record_observation(parse_batch(body), now=T0, source="test")
    fresh = ids("fresh", 2 * CHUNK)

    wanted = pending + failed + cancelling + completed + fresh
    statements: list[str] = []
    event.listen(database.engine, "before_cursor_execute", lambda *a: statements.append(str(a[2])))
    summary = store.request(wanted, now=LATER, requested_by="ops", reason="budget")

    assert sorted(summary.already) == sorted(pending)
    assert sorted(summary.reopened) == sorted(failed)
    assert sorted(summary.new) == sorted(cancelling + completed + fresh)
    assert summary.closed_at_once == dict.fromkeys(completed, "too_late:completed")
    with database.transaction() as session:
        rows = {r.batch_id: r for r in session.scalars(select(CancelRequest))}
        requested = [
            e.batch_id
            for e in session.scalars(
                select(BatchEvent).where(
                    BatchEvent.kind == "cancel_requested", BatchEvent.recorded_at == LATER
                )
            )
        ]
    assert {rows[b].requested_by for b in pending} == {"first"}  # asking twice: untouched
    for batch_id in failed:
        assert (rows[batch_id].state, rows[batch_id].outcome) == ("pending", None)
        assert (rows[batch_id].requested_by, rows[batch_id].reason) == ("ops", "budget")
    assert {rows[b].state for b in fresh} == {"pending"}
    assert {rows[b].attempts for b in fresh} == {0}
    assert {(rows[b].state, rows[b].next_attempt_at) for b in cancelling} == {("accepted", None)}
    for batch_id in completed:
        row = rows[batch_id]
        assert (row.state, row.outcome, row.terminal_status) == (
            "closed",
            "too_late:completed",
            "completed",
        )
        assert row.seconds_to_terminal is None  # it ended before anyone asked
    assert sorted(requested) == sorted(failed + cancelling + completed + fresh)
    # 1,606 ids: a handful of statements per 500 of them, not several per id.
    assert len(statements) <= 30, len(statements)
