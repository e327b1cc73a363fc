"""`forget` while a process is working on the batch: an observation that comes back after
the row was deleted (a poll that hung past its lease, a list page, a cancel's answer, a
webhook) never brings the batch back. Only `track` (or `cancel`) and a webhook's adoption
create a batch's row, each with its `tracked` event.

The poll and cancel tests failed on the code before (d58f47b). ``PollStore.record_poll``
inserted a row for the batch it had polled if there was none, so a forgotten batch came
back, tracked by "reconciler", due at once, with no `tracked` event and nothing in the
log. ``CancelStore.record_attempts`` brought nothing back, but raised KeyError: the whole
tick's answers were rolled back (the worker then recorded each alone, the forgotten one
as "unrecorded", with tracebacks). The list page and the webhook tests passed before:
they guard the paths that were right.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.observation import parse_batch
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.core.webhooks import BatchEvent as Delivery
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.corrections import CorrectionStore
from orchestrator.db.database import Database
from orchestrator.db.list_polls import ListPollStore
from orchestrator.db.models import Batch, BatchEvent, CancelAttempt, CancelRequest
from orchestrator.db.polls import PollStore
from orchestrator.db.webhooks import Outcome, WebhookStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = 60.0
LATER = T0 + timedelta(seconds=LEASE + 1)  # the lease ran out: `forget` may drop the batch


def payload(batch_id: str, status: str) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "created_at": int(T0.timestamp()),
    }


def rows(db: Database) -> dict[str, str | None]:
    """Each batch row: its id and who tracked it."""
    with db.transaction() as s:
        return {row.id: row.tracked_by for row in s.execute(select(Batch.id, Batch.tracked_by))}


def history(db: Database, batch_id: str) -> list[tuple[str, str]]:
    with db.transaction() as s:
        return [
            (e.kind, e.source)
            for e in s.scalars(
                select(BatchEvent).where(BatchEvent.batch_id == batch_id).order_by(BatchEvent.id)
            )
        ]


def forget(db: Database, *ids: str, now: datetime = LATER) -> None:
    summary = CorrectionStore(db).forget(ids, now=now, by="ops", reason="tracked by mistake")
    assert summary.forgotten == sorted(ids)


def test_a_poll_in_flight_when_its_batch_was_forgotten_does_not_bring_it_back(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The reconciler claimed the batch and sent its GET; the GET hung past the lease,
    the operator forgot the batch, then the answer came back and was recorded."""
    BatchStore(database).track(["batch_gone", "batch_kept"], now=T0, source="track")
    polls = PollStore(database)
    claims = polls.claim_due(now=T0, owner="r1", lease_seconds=LEASE, limit=10)
    assert sorted(c.batch_id for c in claims) == ["batch_gone", "batch_kept"]
    forget(database, "batch_gone")
    policy = PollPolicy()
    with caplog.at_level(logging.INFO, logger="orchestrator"):
        record = polls.record_poll(
            parse_batch(payload("batch_gone", "in_progress")),
            now=T0,  # when its GET began, before the forget
            owner="r1",
            policy=policy,
            lease_seconds=LEASE,
            u=0.5,
        )
    assert record is None
    assert rows(database) == {"batch_kept": "track"}
    assert history(database, "batch_gone") == []
    [line] = [r for r in caplog.records if getattr(r, "batch_id", None) == "batch_gone"]
    assert line.levelno == logging.INFO
    assert "forgotten while its poll was in flight" in line.getMessage()
    # The batch still tracked is recorded as before.
    kept = polls.record_poll(
        parse_batch(payload("batch_kept", "in_progress")),
        now=T0,
        owner="r1",
        policy=policy,
        lease_seconds=LEASE,
        u=0.5,
    )
    assert kept is not None and kept.status is not None and kept.status.value == "in_progress"
    assert [k for k, _ in history(database, "batch_kept")] == ["tracked", "status"]


def test_a_list_page_after_a_forget_does_not_bring_the_batch_back(database: Database) -> None:
    BatchStore(database).track(["batch_gone", "batch_kept"], now=T0, source="track")
    forget(database, "batch_gone", now=T0)
    page = [parse_batch(payload(i, "in_progress")) for i in ("batch_gone", "batch_kept")]
    records = ListPollStore(PollStore(database)).record_page(
        page, now=T0, owner="lister", policy=PollPolicy(), lease_seconds=LEASE, u=lambda: 0.5
    )
    assert [r.batch_id for r in records] == ["batch_kept"]
    assert rows(database) == {"batch_kept": "track"}
    assert history(database, "batch_gone") == []


def test_a_cancel_answered_after_its_batch_was_forgotten_does_not_bring_it_back(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker claimed the cancel and sent it; the answer came back after the lease ran
    out and the batch was forgotten. The other answers of the tick are recorded."""
    ids = ["batch_gone", "batch_kept"]
    BatchStore(database).track(ids, now=T0, source="track")
    cancels = CancelStore(database)
    cancels.request(ids, now=T0, requested_by="ops")
    claims = cancels.claim_due("w1", now=T0, limit=10, lease_seconds=LEASE)
    assert sorted(c.batch_id for c in claims) == ids
    forget(database, "batch_gone")
    finished = [
        (
            claim,
            Attempt(
                AttemptOutcome.ACCEPTED,
                T0,
                LATER,
                200,
                "req_1",
                observed=parse_batch(payload(claim.batch_id, "cancelling")),
            ),
        )
        for claim in claims
    ]
    with caplog.at_level(logging.INFO, logger="orchestrator"):
        states = cancels.record_attempts("w1", finished)
    assert states["batch_kept"] == "accepted"
    assert states["batch_gone"] == "forgotten"
    assert rows(database) == {"batch_kept": "track"}
    assert history(database, "batch_gone") == []
    with database.transaction() as s:
        assert s.get(CancelRequest, "batch_gone") is None
        attempts = s.scalars(select(CancelAttempt.batch_id)).all()
        assert attempts == ["batch_kept"]
    [line] = [r for r in caplog.records if getattr(r, "batch_id", None) == "batch_gone"]
    assert line.levelno == logging.INFO
    assert "forgotten while its cancel was in flight" in line.getMessage()


def test_a_webhook_after_a_forget_brings_the_batch_back_only_by_adoption(
    database: Database,
) -> None:
    BatchStore(database).track(["batch_gone"], now=T0, source="track")
    forget(database, "batch_gone", now=T0)
    store = WebhookStore(database)
    delivery = Delivery("evt_1", "batch.completed", "batch_gone")
    ignored = store.record("wh_1", delivery, adopt_unknown=False)
    assert ignored is Outcome.IGNORED
    assert rows(database) == {}
    delivery = Delivery("evt_2", "batch.completed", "batch_gone")
    adopted = store.record("wh_2", delivery, adopt_unknown=True)
    assert adopted is Outcome.ADOPTED
    assert [k for k, _ in history(database, "batch_gone")] == ["tracked"]
