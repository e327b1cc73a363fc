"""The receiver over real HTTP on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from orchestrator.clock import SystemClock
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, WebhookEvent
from orchestrator.db.webhooks import WebhookStore
from orchestrator.processes.webhooks import ReceiverConfig, WebhookReceiver
from orchestrator.secret import Secret

from .signing import OTHER_SECRET, SECRET, event_body, signed_headers

FAR = datetime(2099, 1, 1, tzinfo=UTC)
Start = Callable[..., WebhookReceiver]


@pytest.fixture
def start(database: Database) -> Iterator[Start]:
    running: list[WebhookReceiver] = []

    def make(**config: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(
            database, ReceiverConfig(secret=Secret(SECRET), **config), SystemClock()
        ).start()
        running.append(receiver)
        return receiver

    yield make
    for receiver in running:
        receiver.stop()


def _post(receiver: WebhookReceiver, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(receiver.url, content=body, headers=headers, timeout=5)


def _track(database: Database, batch_id: str, *, next_poll_at: datetime = FAR) -> None:
    BatchStore(database).track([batch_id], now=datetime.now(UTC), source="track")
    with database.transaction() as session:
        session.execute(update(Batch).where(Batch.id == batch_id).values(next_poll_at=next_poll_at))


def _batch(database: Database, batch_id: str) -> Batch | None:
    with database.transaction() as session:
        return session.get(Batch, batch_id)


def _events(database: Database) -> list[tuple[str, str | None, str]]:
    with database.transaction() as session:
        rows = session.execute(
            select(WebhookEvent.webhook_id, WebhookEvent.batch_id, WebhookEvent.outcome)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_an_event_makes_its_batch_due_now_and_a_redelivery_changes_nothing(
    database: Database, start: Start
) -> None:
    receiver = start()
    _track(database, "batch_a")
    body = event_body("batch_a")
    before = datetime.now(UTC)
    first = _post(receiver, body, signed_headers(body, webhook_id="msg_a"))
    assert (first.status_code, first.json()) == (200, {"outcome": "due"})
    row = _batch(database, "batch_a")
    assert row is not None and row.next_poll_at is not None
    assert row.next_poll_at < before + timedelta(seconds=30)  # due now (the database's now)
    assert row.status is None  # the event itself decides nothing

    _track(database, "batch_a")  # as if a poll had since rescheduled it far away
    again = _post(receiver, body, signed_headers(body, webhook_id="msg_a"))
    assert (again.status_code, again.json()) == (200, {"outcome": "duplicate"})
    row = _batch(database, "batch_a")
    assert row is not None and row.next_poll_at == FAR  # not acted on twice
    assert _events(database) == [("msg_a", "batch_a", "due")]


def test_a_forged_event_changes_nothing(database: Database, start: Start) -> None:
    receiver = start()
    _track(database, "batch_a")
    body = event_body("batch_a")
    forged = _post(receiver, body, signed_headers(body, secret=OTHER_SECRET))
    assert forged.status_code == 400 and "no v1 signature" in forged.json()["error"]
    stale = _post(receiver, body, signed_headers(body, timestamp=1_600_000_000))
    assert stale.status_code == 400 and "old" in stale.json()["error"]
    unsigned = _post(receiver, body, {"content-type": "application/json"})
    assert unsigned.status_code == 400 and "missing header" in unsigned.json()["error"]
    row = _batch(database, "batch_a")
    assert row is not None and row.next_poll_at == FAR
    assert _events(database) == []


def test_the_body_cap_is_enforced_before_the_body_is_read(database: Database, start: Start) -> None:
    receiver = start(max_body_bytes=1000)
    body = event_body("batch_a") + b" " * 2000
    assert _post(receiver, body, signed_headers(body)).status_code == 413
    # A sender that only announces a huge body gets its answer without sending it.
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as raw:
        raw.sendall(
            b"POST /webhooks/openai HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert _events(database) == []


@pytest.mark.parametrize("adopt", [False, True])
def test_an_unknown_batch_is_recorded_and_adopted_or_ignored_by_the_setting(
    database: Database, start: Start, adopt: bool
) -> None:
    receiver = start(adopt_unknown=adopt)
    body = event_body("batch_new")
    answer = _post(receiver, body, signed_headers(body, webhook_id="msg_n"))
    outcome = "adopted" if adopt else "ignored"
    assert (answer.status_code, answer.json()) == (200, {"outcome": outcome})
    assert _events(database) == [("msg_n", "batch_new", outcome)]
    row = _batch(database, "batch_new")
    if adopt:
        assert row is not None and row.tracked_by == "webhook" and row.next_poll_at is not None
    else:
        assert row is None


def test_other_paths_health_and_metrics(database: Database, start: Start) -> None:
    receiver = start()
    base = receiver.url.removesuffix("/webhooks/openai")
    assert httpx.get(f"{base}/healthz", timeout=5).json() == {"healthy": True}
    assert httpx.post(f"{base}/other", content=b"{}", timeout=5).status_code == 404
    body = event_body("batch_x")
    _post(receiver, body, signed_headers(body, secret=OTHER_SECRET))
    text = httpx.get(f"{base}/metrics", timeout=5).text
    assert 'orchestrator_webhook_deliveries_total{outcome="rejected"} 1.0' in text


def test_silence_is_judged_on_the_database_clock(database: Database) -> None:
    store = WebhookStore(database)
    assert store.quiet(60)
    body = event_body("batch_q")
    from orchestrator.core.webhooks import parse_event

    store.record("msg_q", parse_event(body), adopt_unknown=False)
    assert not store.quiet(60)
    with database.transaction() as session:
        session.execute(
            update(WebhookEvent).values(received_at=datetime.now(UTC) - timedelta(seconds=120))
        )
    assert store.quiet(60)
