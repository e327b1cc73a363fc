"""Two hosts start tracking the same batch at once, on PostgreSQL: the batch is new to
one of them only, and its ``tracked`` event is written once.

Each test forces the interleaving that lost: host B decides whether the batch is known
after host A inserted its row and before A commits (B cannot see it yet), then B's own
insert waits for A's commit and finds the row there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.core.webhooks import BatchEvent as WebhookEvent
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import BatchEvent
from orchestrator.db.webhooks import Outcome, WebhookStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WAIT = 10  # seconds: only a failing test waits this long


@pytest.fixture
def hosts(pg_url: str) -> Iterator[tuple[Database, Database]]:
    a, b = Database.connect(pg_url), Database.connect(pg_url)
    yield a, b
    a.dispose()
    b.dispose()


def interleave(monkeypatch: pytest.MonkeyPatch, first: Database) -> threading.Event:
    """Make ``BatchStore.ensure_rows`` (every path's insert of a new batch row) hold the
    transaction of host ``first`` open after its insert until the other host has decided
    and reached its own insert. Returns the event set once ``first`` inserted."""
    original = BatchStore.ensure_rows
    inserted, other_there = threading.Event(), threading.Event()

    def ensure_rows(
        self: BatchStore, session: Session, ids: list[str], *, now: datetime, source: str
    ) -> list[str]:
        if self.db is first:
            new = original(self, session, ids, now=now, source=source)
            inserted.set()
            assert other_there.wait(WAIT)
            return new
        other_there.set()
        return original(self, session, ids, now=now, source=source)  # waits for A's commit

    monkeypatch.setattr(BatchStore, "ensure_rows", ensure_rows)
    return inserted


def race(
    first: Callable[[], object], second: Callable[[], object], inserted: threading.Event
) -> None:
    errors: list[BaseException] = []

    def run(work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as exc:  # reported by the test's own thread, below
            errors.append(exc)

    a = threading.Thread(target=run, args=(first,))
    a.start()
    assert inserted.wait(WAIT)
    b = threading.Thread(target=run, args=(second,))
    b.start()
    a.join(WAIT)
    b.join(WAIT)
    assert not a.is_alive() and not b.is_alive()
    assert not errors, errors


def tracked_events(db: Database, batch_id: str) -> list[str | None]:
    with db.transaction() as session:
        return list(
            session.scalars(
                select(BatchEvent.source).where(
                    BatchEvent.batch_id == batch_id, BatchEvent.kind == "tracked"
                )
            )
        )


@pytest.mark.postgres
def test_two_hosts_tracking_one_batch_at_once_record_it_once(
    hosts: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db_a, db_b = hosts
    inserted = interleave(monkeypatch, first=db_a)
    new: dict[str, list[str]] = {}

    def track(db: Database, who: str) -> Callable[[], object]:
        return lambda: new.setdefault(
            who, BatchStore(db).track(["batch_1", "batch_2"], now=T0, source=who)
        )

    race(track(db_a, "host_a"), track(db_b, "host_b"), inserted)
    assert new == {"host_a": ["batch_1", "batch_2"], "host_b": []}
    assert tracked_events(db_a, "batch_1") == tracked_events(db_a, "batch_2") == ["host_a"]


@pytest.mark.postgres
def test_two_deliveries_adopting_one_unknown_batch_at_once_adopt_it_once(
    hosts: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two receivers (or two threads of one), two deliveries about one batch we did not
    track: one adopts it, the other finds it adopted and makes it due."""
    db_a, db_b = hosts
    inserted = interleave(monkeypatch, first=db_a)
    event = WebhookEvent("evt_1", "batch.completed", "batch_1")
    outcomes: dict[str, Outcome] = {}

    def deliver(store: WebhookStore, webhook_id: str) -> Callable[[], object]:
        def go() -> None:
            outcomes[webhook_id] = store.record(webhook_id, event, adopt_unknown=True)

        return go

    race(deliver(WebhookStore(db_a), "msg_a"), deliver(WebhookStore(db_b), "msg_b"), inserted)
    assert outcomes == {"msg_a": Outcome.ADOPTED, "msg_b": Outcome.DUE}
    assert tracked_events(db_a, "batch_1") == ["webhook"]
