"""Recording a tick of answers costs a fixed number of statements, however many answers.

The worker's throughput at high concurrency is bound by this path (see
docs/benchmarks.md). A per-row statement sneaking back in, as the ORM's bulk
insert does when rows differ in which columns are null, fails here, not only in
a benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

from sqlalchemy import event, func, select

from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.observation import parse_batch
from orchestrator.db.cancels import CancelStore, Claim
from orchestrator.db.database import Database, Prepared
from orchestrator.db.models import BatchEvent, CancelAttempt
from tests.worker.fake_api import batch_body

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def answers(claims: list[Claim]) -> list[tuple[Claim, Attempt]]:
    """Accepted (with a Batch body, so events with and without details) and retries mixed."""
    later = T0 + timedelta(seconds=1)
    finished = []
    for n, claim in enumerate(claims):
        if n % 3:
            observed = parse_batch(batch_body(claim.batch_id, "cancelling"))
            attempt = Attempt(AttemptOutcome.ACCEPTED, T0, later, 200, f"req_{n}", None, observed)
        else:
            attempt = Attempt(
                AttemptOutcome.RETRY, T0, later, 503, None, "HTTP 503", retry_at=later
            )
        finished.append((claim, attempt))
    return finished


def statements_to_record(database: Database, count: int) -> int:
    store = CancelStore(database)
    ids = [f"batch_cost{count:03d}x{n:03d}" for n in range(count)]
    store.request(ids, now=T0, requested_by="test")
    claims = store.claim_due("w1", now=T0, limit=count, lease_seconds=60)
    assert len(claims) == count
    seen: list[str] = []

    def count_statement(*args: object) -> None:
        seen.append(str(args[2]))

    def counted(run: Callable[..., object]) -> Callable[..., object]:
        def run_counted(self: Prepared, *args: object) -> object:
            seen.append(self.sql)
            return run(self, *args)

        return run_counted

    # Statements go through Core (its event) or straight to the driver (``Prepared``,
    # which SQLAlchemy's events do not see): both are counted.
    event.listen(database.engine, "before_cursor_execute", count_statement)
    try:
        with (
            patch.object(Prepared, "rows", counted(Prepared.rows)),
            patch.object(Prepared, "run_many", counted(Prepared.run_many)),
        ):
            store.record_attempts("w1", answers(claims))
    finally:
        event.remove(database.engine, "before_cursor_execute", count_statement)
    with database.transaction() as session:
        attempts = session.scalar(
            select(func.count()).select_from(CancelAttempt).where(CancelAttempt.batch_id.in_(ids))
        )
        events = session.scalar(
            select(func.count())
            .select_from(BatchEvent)
            .where(BatchEvent.batch_id.in_(ids), BatchEvent.source == "worker")
        )
    accepted = sum(1 for n in range(count) if n % 3)
    assert attempts == count
    assert events == 2 * accepted  # the status change and "cancel accepted"
    return len([s for s in seen if not s.startswith(("BEGIN", "COMMIT"))])


def test_statements_per_tick_do_not_grow_with_the_answers(database: Database) -> None:
    few, many = statements_to_record(database, 3), statements_to_record(database, 30)
    assert few == many
    assert 4 <= many <= 8  # two locking reads, then the attempts, events, batches, requests
