"""Webhook events: record a verified delivery once, and make its batch due for a poll.

Everything here runs on the database server's clock (``server_now``): the
receiver and every reconciler may run on different hosts, and "the batch is due
now" and "webhooks have gone quiet" must mean the same to all of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator.core.harvest import HarvestState
from orchestrator.core.webhooks import BatchEvent
from orchestrator.db.batches import BatchStore, event_values
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, WebhookEvent, table_of
from orchestrator.db.models import BatchEvent as EventRow
from orchestrator.db.server_time import server_now

__all__ = ["Outcome", "WebhookStore", "arrived_since"]

SOURCE = "webhook"


class Outcome(StrEnum):
    DUPLICATE = "duplicate"  # a redelivery: acknowledged, nothing done again
    DUE = "due"  # the batch is due for a poll now
    ADOPTED = "adopted"  # an unknown batch, now tracked (and due)
    IGNORED = "ignored"  # an unknown batch, left alone by the setting
    SETTLED = "settled"  # nothing left to do for the batch: its harvest is over
    RECORDED = "recorded"  # not a batch event: kept, nothing else


def arrived_since(session: Session, batch_id: str, since: datetime) -> bool:
    """Was a webhook for this batch recorded at or after ``since``?"""
    found = session.scalar(
        select(WebhookEvent.webhook_id)
        .where(WebhookEvent.batch_id == batch_id, WebhookEvent.received_at >= since)
        .limit(1)
    )
    return found is not None


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.batches = BatchStore(db)

    def record(self, webhook_id: str, event: BatchEvent, *, adopt_unknown: bool) -> Outcome:
        """Record a verified delivery and act on it, in one transaction; a second
        delivery of the same ``webhook_id`` changes nothing and says DUPLICATE."""
        with self.db.transaction() as session:
            now = server_now(session)
            inserted = session.execute(
                self.db.insert_ignoring_conflicts(table_of(WebhookEvent))
                .values(
                    webhook_id=webhook_id,
                    received_at=now,
                    event_id=event.event_id,
                    event_type=event.type,
                    batch_id=event.batch_id,
                    outcome=Outcome.RECORDED.value,
                )
                .returning(WebhookEvent.webhook_id)  # rowcount is not reliable on every driver
            ).scalar_one_or_none()
            if inserted is None:
                return Outcome.DUPLICATE
            outcome = self._act(session, event, now=now, adopt_unknown=adopt_unknown)
            if outcome is not Outcome.RECORDED:
                session.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.webhook_id == webhook_id)
                    .values(outcome=outcome.value)
                )
            return outcome

    def _act(
        self, session: Session, event: BatchEvent, *, now: datetime, adopt_unknown: bool
    ) -> Outcome:
        batch_id = event.batch_id
        if batch_id is None:
            return Outcome.RECORDED
        row = session.get(Batch, batch_id, with_for_update=True)
        if row is None:
            if not adopt_unknown:
                return Outcome.IGNORED
            if self.batches.ensure_rows(session, [batch_id], now=now, source=SOURCE):
                detail = f"tracked on a {event.type} webhook"
                self.db.insert_rows(
                    session,
                    table_of(EventRow),
                    [event_values(batch_id, "tracked", now, SOURCE, detail=detail)],
                )
                return Outcome.ADOPTED
            # Another transaction (another delivery, `track`) added the row since the
            # read above: that one tracked it, and this delivery makes it due like any
            # known batch's. (Gone again, `forget`: an error, and the sender delivers
            # again later.)
            row = session.scalars(select(Batch).where(Batch.id == batch_id).with_for_update()).one()
        if row.next_poll_at is None:
            if row.status is not None:
                return Outcome.SETTLED  # seen, and nothing more to do: the harvest is over
            # Polls were stopped (never seen, 404s): follow it again, as `track` would,
            # since a signed event says it exists.
            row.poll_failures = 0
        # Due now, never later than it already was.
        if row.next_poll_at is None or row.next_poll_at > now:
            row.next_poll_at = now
        return Outcome.DUE

    def bring_forward(self, *, now: datetime, within_seconds: float) -> int:
        """Make due now every batch still waiting for its status (not terminal, not
        failing) whose next poll is more than ``within_seconds`` away: webhooks went
        quiet, and the stretched schedule they allowed must not make us late."""
        with self.db.transaction() as session:
            result = session.execute(
                update(Batch)
                .where(
                    Batch.next_poll_at > now + timedelta(seconds=within_seconds),
                    Batch.harvest_state == HarvestState.WAITING.value,
                    Batch.poll_failures == 0,
                )
                .values(next_poll_at=now)
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def quiet(self, window_seconds: float) -> bool:
        """True when no webhook arrived in the last ``window_seconds`` (database clock)."""
        with self.db.transaction() as session:
            now = server_now(session)
            recent = session.scalar(
                select(WebhookEvent.webhook_id)
                .where(WebhookEvent.received_at >= now - timedelta(seconds=window_seconds))
                .limit(1)
            )
            return recent is None
