"""Recording cancel requests in bulk: every case decided per id, across chunk boundaries,
with a number of statements that grows with chunks of ids, not with ids."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, event, select, text, update

from orchestrator.core.observation import parse_batch
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import IDS_PER_STATEMENT, Database
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
            .values(
                state="failed",
                outcome="not_found",
                closed_at=T0,
                last_error="HTTP 404: no such batch",
                last_http_status=404,
                last_request_id="req_old",
            )
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
    fresh = ids("fresh", 2 * IDS_PER_STATEMENT)

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
        assert (rows[batch_id].closed_at, rows[batch_id].last_error) == (None, None)
        assert (rows[batch_id].last_http_status, rows[batch_id].last_request_id) == (None, None)
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


def test_a_fleet_cancel_and_the_worker_lock_in_one_order_no_deadlock(pg_url: str) -> None:
    """The worker locks some batches, then requests; a cancel spanning chunks must lock
    all its batches before any request, or the two wait on each other (PostgreSQL)."""
    db = Database.connect(pg_url)
    store = CancelStore(db)
    fleet = ["batch_c", *ids("m", 499), "batch_z", *ids("n", 99)]  # c and z: other chunks
    store.request(fleet, now=T0, requested_by="seed")
    outcome: dict[str, object] = {}

    def cancel_again() -> None:
        try:
            outcome["summary"] = store.request(fleet, now=LATER, requested_by="ops")
        except Exception as exc:
            outcome["error"] = exc

    with db.engine.connect() as worker:
        worker.execute(text("SET lock_timeout = '10s'"))
        worker.execute(text("SELECT id FROM batches WHERE id = 'batch_z' FOR UPDATE"))
        other = threading.Thread(target=cancel_again)
        other.start()
        wait_until_a_session_waits_for_a_lock(worker)
        # Now the worker's second step, as record_attempts takes it: requests, id order.
        worker.execute(
            text(
                "SELECT batch_id FROM cancel_requests WHERE batch_id IN ('batch_c', 'batch_z')"
                " ORDER BY batch_id FOR UPDATE"
            )
        )
        worker.commit()
        other.join(timeout=60)
    db.dispose()
    assert "error" not in outcome, outcome
    assert sorted(outcome["summary"].already) == sorted(fleet)  # type: ignore[attr-defined]


def wait_until_a_session_waits_for_a_lock(connection: Connection) -> None:
    """Poll pg_stat_activity (an observable state, not a guessed delay)."""
    deadline = time.monotonic() + 30
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database() AND pid <> pg_backend_pid()"
    )
    # Statistics are read once per transaction unless the snapshot is cleared.
    while connection.execute(text("SELECT pg_stat_clear_snapshot()")) and (
        connection.execute(query).scalar_one() == 0
    ):
        assert time.monotonic() < deadline, "the cancel never waited for the batch lock"
        time.sleep(0.01)


def test_withdraw_takes_back_only_requests_never_sent_and_a_new_ask_reopens(
    database: Database,
) -> None:
    store = CancelStore(database)
    store.request(["batch_unsent", "batch_sent", "batch_leased"], now=T0, requested_by="ops")
    with database.transaction() as session:
        session.execute(
            update(CancelRequest).where(CancelRequest.batch_id == "batch_sent").values(attempts=1)
        )
        session.execute(
            update(CancelRequest)
            .where(CancelRequest.batch_id == "batch_leased")
            .values(lease_owner="w1", lease_expires_at=LATER)
        )

    summary = store.withdraw(
        ["batch_unsent", "batch_sent", "batch_leased", "batch_never"], now=LATER
    )

    assert summary.withdrawn == ["batch_unsent"]
    assert summary.refused == {
        "batch_leased": "a worker (w1) may be sending it now",
        "batch_never": "no cancel was requested",
        "batch_sent": "already sent (1 attempt(s))",
    }
    with database.transaction() as session:
        states = dict(session.execute(select(CancelRequest.batch_id, CancelRequest.state)).all())
        kinds = session.scalars(
            select(BatchEvent.kind).where(BatchEvent.batch_id == "batch_unsent")
        ).all()
    assert states == {
        "batch_unsent": "withdrawn",
        "batch_sent": "pending",
        "batch_leased": "pending",
    }
    assert kinds == ["cancel_requested", "cancel_withdrawn"]
    claims = store.claim_due("w2", now=LATER, limit=10, lease_seconds=60)
    assert [c.batch_id for c in claims] == ["batch_leased", "batch_sent"]  # not the withdrawn

    again = store.request(["batch_unsent"], now=LATER, requested_by="ops")
    assert again.reopened == ["batch_unsent"]


def test_a_shorter_pause_never_cuts_a_longer_one_short(database: Database) -> None:
    """Workers with different auth pauses (or one whose write lands after a later one's)
    hit 401 together: the pause in force ends at the latest `until` any of them set,
    with that one's reason; a pause that has ended is replaced by a new one."""
    store = CancelStore(database)
    store.pause("HTTP 401 (w1)", now=T0, until=T0 + timedelta(minutes=10))
    store.pause("HTTP 401 (w2)", now=T0 + timedelta(seconds=1), until=T0 + timedelta(minutes=1))
    pause = store.active_pause(T0 + timedelta(minutes=5))
    assert pause is not None, "the 1-minute pause cut the 10-minute one short"
    assert (pause.reason, pause.until) == ("HTTP 401 (w1)", T0 + timedelta(minutes=10))
    store.pause("HTTP 403 (w3)", now=T0 + timedelta(minutes=6), until=T0 + timedelta(minutes=16))
    pause = store.active_pause(T0 + timedelta(minutes=12))
    assert pause is not None and pause.reason == "HTTP 403 (w3)"
    assert pause.until == T0 + timedelta(minutes=16)
    store.pause("HTTP 401 (w1)", now=LATER, until=LATER + timedelta(minutes=1))  # ended: anew
    pause = store.active_pause(LATER)
    assert pause is not None and (pause.paused_at, pause.until) == (
        LATER,
        LATER + timedelta(minutes=1),
    )
