from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from orchestrator.core.observation import parse_batch
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent, CancelRequest
from orchestrator.db.polls import PollStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def payload(status: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "created_at": int(T0.timestamp()),
    }
    base.update(extra)
    return base


def events(db: Database, batch_id: str = "batch_1") -> list[tuple[str, str | None, str | None]]:
    with db.transaction() as s:
        rows = s.scalars(
            select(BatchEvent).where(BatchEvent.batch_id == batch_id).order_by(BatchEvent.id)
        )
        return [(e.kind, e.from_status, e.to_status) for e in rows]


def test_track_is_idempotent(database: Database) -> None:
    store = BatchStore(database)
    assert store.track(["batch_1", "batch_2", "batch_1"], now=T0, source="track") == [
        "batch_1",
        "batch_2",
    ]
    assert store.track(["batch_1"], now=T0, source="track") == []
    row = store.get("batch_1")
    assert row is not None and row.status is None and row.next_poll_at == T0


def test_observations_are_stored_with_aware_utc_timestamps(database: Database) -> None:
    store = BatchStore(database)
    cancelling = int((T0 + timedelta(seconds=30)).timestamp())
    store.record_observation(
        parse_batch(
            payload(
                "cancelling",
                in_progress_at=int(T0.timestamp()) + 1,
                cancelling_at=cancelling,
                request_counts={"total": 10, "completed": 3, "failed": 0},
                metadata={"team": "a"},
            )
        ),
        now=T0,
        source="worker",
    )
    row = store.get("batch_1")
    assert row is not None
    assert row.status == "cancelling"
    assert row.cancelling_at == T0 + timedelta(seconds=30)
    assert row.cancelling_at.tzinfo is not None
    assert row.request_counts_completed == 3
    assert row.metadata_ == {"team": "a"}
    assert events(database) == [("status", None, "cancelling")]


def test_a_jump_records_each_step_and_closes_the_cancel(database: Database) -> None:
    store = BatchStore(database)
    store.record_observation(parse_batch(payload("validating")), now=T0, source="reconciler")
    with database.transaction() as s:
        s.add(CancelRequest(batch_id="batch_1", requested_at=T0, state="accepted", attempts=1))
    ts = int(T0.timestamp())
    recorded = store.record_observation(
        parse_batch(payload("cancelled", cancelling_at=ts + 5, cancelled_at=ts + 65)),
        now=T0 + timedelta(minutes=2),
        source="reconciler",
    )
    assert recorded.cancel_closed == "cancelled"
    assert events(database) == [
        ("status", None, "validating"),
        ("status", "validating", "cancelling"),
        ("status", "cancelling", "cancelled"),
        ("cancel_closed", None, None),
    ]
    with database.transaction() as s:
        request = s.get(CancelRequest, "batch_1")
        assert request is not None
        assert request.outcome == "cancelled"
        assert request.seconds_to_terminal == 65


def test_a_regression_is_an_anomaly_event_and_changes_nothing(database: Database) -> None:
    store = BatchStore(database)
    store.record_observation(parse_batch(payload("completed")), now=T0, source="reconciler")
    store.record_observation(parse_batch(payload("in_progress")), now=T0, source="reconciler")
    store.record_observation(parse_batch(payload("on_fire")), now=T0, source="reconciler")
    row = store.get("batch_1")
    assert row is not None and row.status == "completed"
    assert [e[0] for e in events(database)] == ["status", "anomaly", "anomaly"]


def test_concurrent_writers_never_corrupt_a_row_or_lose_an_event(db_url: str) -> None:
    """Many threads, each its own connection, race observations onto the same rows
    (PostgreSQL: row locks; SQLite: one IMMEDIATE writer at a time)."""
    db = Database.connect(db_url, pool_size=16)
    store = BatchStore(db)
    ids = [f"batch_{i}" for i in range(5)]
    ts = int(T0.timestamp())
    script = [
        payload("validating"),
        payload("in_progress", in_progress_at=ts + 1),
        payload("finalizing", in_progress_at=ts + 1, finalizing_at=ts + 2),
        payload("completed", in_progress_at=ts + 1, finalizing_at=ts + 2, completed_at=ts + 3),
    ]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            barrier.wait()
            for round_ in range(6):
                for i, batch_id in enumerate(ids):
                    body = dict(script[(seed + round_ + i) % len(script)], id=batch_id)
                    store.record_observation(parse_batch(body), now=T0, source=f"w{seed}")
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.transaction() as s:
        for batch_id in ids:
            row = s.get(Batch, batch_id)
            assert row is not None and row.status == "completed"
            assert row.version == 8 * 6
            steps = s.execute(
                select(BatchEvent.from_status, BatchEvent.to_status)
                .where(BatchEvent.batch_id == batch_id, BatchEvent.kind == "status")
                .order_by(BatchEvent.id)
            ).all()
            # one unbroken, legal chain of steps from first sight to completed
            chain = [to for _, to in steps]
            assert chain[-1] == "completed"
            assert len(chain) == len(set(chain))
            for (frm, _to), (_, prev_to) in zip(steps[1:], steps, strict=False):
                assert frm == prev_to
        total = s.scalar(select(func.count()).select_from(BatchEvent))
        assert total is not None and total > 0
    db.dispose()


def test_a_stale_answer_never_lowers_token_usage(database: Database) -> None:
    store = BatchStore(database)

    def usage(tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 2 * tokens,
        }

    for tokens in (300, 100):  # the second: a page read before the first was recorded
        store.record_observation(
            parse_batch(payload("in_progress", usage=usage(tokens))), now=T0, source="reconciler"
        )
    row = store.get("batch_1")
    assert row is not None
    assert (row.usage_input_tokens, row.usage_total_tokens) == (300, 600)


def test_a_late_poll_failure_from_a_lost_lease_leaves_the_live_owners_count(
    database: Database,
) -> None:
    """r1's poll hung past its lease and r2 took the batch over: r1's failure, recorded
    late, is not r2's. It used to raise the failure count r2's backoff and give-up are
    judged by, and put a stale error over r2's newer poll. An anomaly it saw is still
    recorded: that is what the server said."""
    BatchStore(database).track(["batch_1"], now=T0, source="test")
    polls = PollStore(database)
    policy = PollPolicy()
    assert polls.claim_due(now=T0, owner="r1", lease_seconds=60, limit=1)
    later = T0 + timedelta(seconds=61)
    assert [c.batch_id for c in polls.claim_due(now=later, owner="r2", lease_seconds=60, limit=1)]
    for event in (None, "anomaly"):
        stopped = polls.record_failure(
            "batch_1", now=later, owner="r1", error="timed out", policy=policy, u=0.5, event=event
        )
        assert not stopped
    with database.transaction() as s:
        row = s.get(Batch, "batch_1")
        assert row is not None
        assert (row.poll_failures, row.last_error, row.lease_owner) == (0, None, "r2")
    assert [kind for kind, _, _ in events(database)].count("poll_failed") == 0
    assert [kind for kind, _, _ in events(database)].count("anomaly") == 1
    polls.record_failure("batch_1", now=later, owner="r2", error="503", policy=policy, u=0.5)
    with database.transaction() as s:
        row = s.get(Batch, "batch_1")
        assert row is not None
        assert (row.poll_failures, row.last_error, row.lease_owner) == (1, "503", None)
