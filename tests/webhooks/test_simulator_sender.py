"""The simulator's webhook sender, delivering to our receiver over loopback HTTP.

The simulator, its sender and the receiver's verification share one manual clock;
``pump()`` sends what is due on the test's thread, so nothing here waits on time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from orchestrator.clock import ManualClock, utcnow
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import WebhookEvent
from orchestrator.processes.webhooks import ReceiverConfig, WebhookReceiver
from orchestrator.secret import Secret
from orchestrator.simulator import FaultRule, Scenario, Simulator, SimulatorConfig
from orchestrator.simulator.faults import rules_from_json

from .signing import SECRET

QUICK = Scenario(validating_s=1.0, running_s=10.0, finalizing_s=1.0, cancelling_s=2.0)


@dataclass
class Rig:
    simulator: Simulator
    clock: ManualClock
    database: Database

    def rows(self) -> list[tuple[str, str | None, str]]:
        with self.database.transaction() as session:
            found = session.execute(
                select(WebhookEvent.event_type, WebhookEvent.batch_id, WebhookEvent.outcome)
            ).all()
        return sorted((t, b, o) for t, b, o in found)

    def pump(self, advance: float = 0.0) -> int:
        self.clock.advance(advance)
        assert self.simulator.webhooks is not None
        return self.simulator.webhooks.pump()

    def stats(self) -> dict[str, int]:
        assert self.simulator.webhooks is not None
        return dict(self.simulator.webhooks.stats)

    def batch(self) -> str:
        batch_id = self.simulator.create_batch(3, QUICK)
        BatchStore(self.database).track([batch_id], now=utcnow(), source="track")
        return batch_id


@pytest.fixture
def rig(sqlite_url: str) -> Iterator[Rig]:
    clock = ManualClock(utcnow())
    database = Database.connect(sqlite_url)
    with WebhookReceiver(database, ReceiverConfig(secret=Secret(SECRET)), clock) as receiver:
        config = SimulatorConfig(
            seed=7,
            webhook_urls=(receiver.url,),
            webhook_secret=SECRET,
            webhook_retry_s=1.0,
            webhook_thread=False,
        )
        simulator = Simulator(config, clock)
        yield Rig(simulator, clock, database)
        assert simulator.webhooks is not None
        simulator.webhooks.stop()
    database.dispose()


def test_a_batch_that_ends_is_announced_once_signed(rig: Rig) -> None:
    batch_id = rig.batch()
    assert rig.pump(5) == 0  # still running
    assert rig.pump(10) == 1
    assert rig.pump(100) == 0  # once
    assert rig.rows() == [("batch.completed", batch_id, "due")]
    assert rig.stats() == {"sent": 1, "acknowledged": 1}


def test_a_cancel_is_announced_when_cancelling_ends(rig: Rig) -> None:
    batch_id = rig.batch()
    rig.pump(3)
    rig.simulator.api_cancel(batch_id)
    assert rig.pump(1) == 0  # cancelling: no event
    assert rig.pump(2) == 1
    assert rig.pump(20) == 0  # the natural end passes without a second event
    assert rig.rows() == [("batch.cancelled", batch_id, "due")]


def _fault(rig: Rig, kind: str, delay_s: float = 0.0) -> None:
    rig.simulator.add_fault(FaultRule(kind=kind, endpoint="webhook", delay_s=delay_s))  # type: ignore[arg-type]


def test_duplicate_is_recorded_once(rig: Rig) -> None:
    batch_id = rig.batch()
    _fault(rig, "duplicate")
    assert rig.pump(13) == 2
    assert rig.rows() == [("batch.completed", batch_id, "due")]
    assert rig.stats()["acknowledged"] == 2


def test_bad_signature_is_refused_and_the_retry_accepted(rig: Rig) -> None:
    batch_id = rig.batch()
    _fault(rig, "bad_signature")
    assert rig.pump(13) == 1
    assert rig.rows() == []
    assert rig.pump(1) == 1
    assert rig.rows() == [("batch.completed", batch_id, "due")]
    assert rig.stats()["refused_400"] == 1


def test_a_forged_event_is_refused_and_the_genuine_one_counts(rig: Rig) -> None:
    batch_id = rig.batch()
    _fault(rig, "forge")
    assert rig.pump(13) == 2
    assert rig.rows() == [("batch.completed", batch_id, "due")]
    assert rig.stats()["refused_400"] == 1 and "forged_acknowledged" not in rig.stats()


def test_an_event_for_an_unknown_batch(rig: Rig) -> None:
    batch_id = rig.batch()
    _fault(rig, "unknown_batch")
    assert rig.pump(13) == 2
    rows = rig.rows()
    assert ("batch.completed", batch_id, "due") in rows
    assert [o for _, b, o in rows if b != batch_id] == ["ignored"]


def test_lost_dropped_and_late_deliveries(rig: Rig) -> None:
    lost, dropped, late = rig.batch(), rig.batch(), rig.batch()
    rig.simulator.add_faults(
        rules_from_json(
            [
                {"kind": "lose", "endpoint": "webhook", "batch_id": lost},
                {"kind": "drop", "endpoint": "webhook", "batch_id": dropped, "delay_s": 30},
                {"kind": "late", "endpoint": "webhook", "batch_id": late, "delay_s": 400},
            ]
        )
    )
    assert rig.pump(13) == 0
    assert rig.pump(30) == 1  # the dropped one, redelivered
    assert rig.pump(370) == 1  # the late one: signed 400 s ago, refused as stale ...
    assert rig.stats()["refused_400"] == 1
    assert rig.pump(1) == 1  # ... and accepted when redelivered, freshly signed
    assert {b for _, b, _ in rig.rows()} == {dropped, late}


def test_reorder_lets_a_later_event_overtake(rig: Rig) -> None:
    first = rig.batch()
    rig.pump(1)
    second = rig.batch()
    rig.simulator.add_fault(
        FaultRule(kind="reorder", endpoint="webhook", batch_id=first, delay_s=5.0)
    )
    assert rig.pump(11.5) == 0  # first ended, held back
    assert rig.pump(1) == 1
    assert [b for _, b, _ in rig.rows()] == [second]
    assert rig.pump(4) == 1
    assert {b for _, b, _ in rig.rows()} == {first, second}


def test_webhook_faults_belong_to_the_webhook_endpoint() -> None:
    with pytest.raises(ValueError, match="go with endpoint 'webhook'"):
        FaultRule(kind="duplicate", endpoint="retrieve")
    with pytest.raises(ValueError, match="go with endpoint 'webhook'"):
        FaultRule(kind="status", endpoint="webhook")
    rule = FaultRule(kind="status", endpoint="*")
    assert rule.matches("retrieve", None, None) and not rule.matches("webhook", "b", None)


def test_webhook_urls_need_a_secret_and_the_secret_is_not_shown() -> None:
    with pytest.raises(ValueError, match="need a webhook secret"):
        SimulatorConfig(webhook_urls=("http://127.0.0.1:1/x",))
    config = SimulatorConfig(webhook_urls=("http://127.0.0.1:1/x",), webhook_secret=SECRET)
    assert SECRET not in repr(config)
    assert json.dumps(config.webhook_urls)
