"""Webhooks and the reconciler: an event makes a batch due, the GET decides, and the
polling stretched while events flow falls back when they stop."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from orchestrator.clock import ManualClock, SystemClock, utcnow
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, WebhookEvent
from orchestrator.processes.webhooks import ReceiverConfig, WebhookReceiver
from orchestrator.secret import Secret
from orchestrator.simulator import Scenario
from tests.webhooks.signing import OTHER_SECRET, SECRET, event_body, signed_headers

from .conftest import ReconcilerFactory, Sim, expected_outcomes, stored_outcomes, track

POLICY = PollPolicy(webhook_poll_seconds=3600.0)
LONG = Scenario(validating_s=1.0, running_s=600.0, finalizing_s=1.0)


@pytest.fixture
def receiver(database: Database, clock: ManualClock) -> Iterator[WebhookReceiver]:
    # The database's clock makes batches due; the manual clock that drives the
    # simulator and the reconciler starts at the real time so both agree.
    clock.set(utcnow())
    with WebhookReceiver(database, ReceiverConfig(secret=Secret(SECRET)), SystemClock()) as r:
        yield r


def _deliver(
    receiver: WebhookReceiver, batch_id: str, webhook_id: str, secret: str = SECRET
) -> str:
    body = event_body(batch_id, "completed", event_id=f"evt_{webhook_id}")
    headers = signed_headers(body, webhook_id=webhook_id, secret=secret)
    answer = httpx.post(receiver.url, content=body, headers=headers, timeout=5)
    return str(answer.json().get("outcome") or answer.json()["error"])


def _row(database: Database, batch_id: str) -> Batch:
    with database.transaction() as session:
        found = session.get(Batch, batch_id)
        assert found is not None
        return found


def test_an_event_makes_the_batch_due_and_the_get_decides(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    receiver: WebhookReceiver,
) -> None:
    batch_id = sim.simulator.create_batch(20, LONG)
    clock.advance(10)
    track(database, clock, batch_id)
    r = reconciler()
    r.policy = POLICY
    assert _deliver(receiver, "batch_someone_elses", "msg_0") == "ignored"  # events flow

    r.run_once()
    first = _row(database, batch_id)
    assert first.status == "in_progress" and r.webhooks.flowing
    assert first.next_poll_at is not None
    assert first.next_poll_at - clock.now() >= timedelta(seconds=3000)  # stretched

    # An event that is not true yet (signed all the same): the GET says in_progress.
    assert _deliver(receiver, batch_id, "msg_1") == "due"
    clock.advance(1)
    r.run_once()
    assert _row(database, batch_id).status == "in_progress"
    assert sim.simulator.served("retrieve", batch_id) == 2

    # A forged one changes nothing: no poll follows it.
    assert "signature" in _deliver(receiver, batch_id, "msg_2", secret=OTHER_SECRET)
    r.run_once()
    assert sim.simulator.served("retrieve", batch_id) == 2

    clock.advance(700)  # the batch completes; its event arrives
    assert _deliver(receiver, batch_id, "msg_3") == "due"
    r.run_once()
    done = _row(database, batch_id)
    assert (done.status, done.harvest_state) == ("completed", "done")
    assert stored_outcomes(database, batch_id) == expected_outcomes(sim.simulator, batch_id)
    assert sim.simulator.served("retrieve", batch_id) == 3


@pytest.mark.parametrize("after", ["the same process", "a new process"])
def test_when_events_stop_the_stretched_schedule_falls_back(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    receiver: WebhookReceiver,
    after: str,
) -> None:
    """A new process (a restart, or the next `reconcile --once` from cron) never saw the
    events stop: it falls back too, on its first pass."""
    batch_id = sim.simulator.create_batch(5, LONG)
    clock.advance(10)
    track(database, clock, batch_id)
    r = reconciler(webhook_silence_seconds=600.0)
    r.policy = POLICY
    _deliver(receiver, "batch_someone_elses", "msg_0")
    r.run_once()
    assert sim.simulator.served("retrieve", batch_id) == 1
    stretched = _row(database, batch_id).next_poll_at
    assert stretched is not None and stretched - clock.now() >= timedelta(seconds=3000)

    with database.transaction() as session:  # the last event is now 20 minutes old
        session.execute(update(WebhookEvent).values(received_at=utcnow() - timedelta(minutes=20)))
    clock.advance(1)
    if after == "a new process":
        r = reconciler(webhook_silence_seconds=600.0)
        r.policy = POLICY
    r.run_once()
    assert not r.webhooks.flowing
    assert sim.simulator.served("retrieve", batch_id) == 2  # brought forward at once
    normal = _row(database, batch_id).next_poll_at
    assert normal is not None and normal - clock.now() <= timedelta(seconds=POLICY.max_seconds)
