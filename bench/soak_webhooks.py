"""The soak with webhooks on (`--webhooks`): the receiver, the faults, the checks.

An `orchestrator webhooks` process (killed and restarted like the others) receives
the simulator's signed events. The simulator loses, drops (redelivered later),
forges (signed with a wrong key, claiming another status), mis-signs, duplicates,
delays, reorders deliveries and invents batches. The reconcilers stretch their
polling while events flow, so lost events are caught by the stretched polls.

Checked afterwards: no forged or mis-signed delivery was accepted (none answered
2xx, and every recorded event for a batch names the status the server ended it
with, where a forged one names another); an event for a
batch we never tracked was ignored and created no batch; and the usual invariants
(bench/soak_check.py) hold, so the end state is the server's, whatever the events.
"""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select

from bench.soak_check import Figures, Problems, ServerSide
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, WebhookEvent

SECRET = "whsec_" + base64.b64encode(b"soak secret, 32 bytes, not real!").decode()
PATH = "/webhooks/openai"


def webhook_fault_rules(rate: float) -> list[dict[str, Any]]:
    """The share of events each webhook fault hits (scaled by ``rate``); one per event."""

    def p(share: float) -> float:
        return min(1.0, share * rate)

    rules: list[dict[str, Any]] = [
        {"kind": "lose", "probability": p(0.05)},
        {"kind": "drop", "delay_s": 5.0, "probability": p(0.05)},
        {"kind": "forge", "probability": p(0.05)},
        {"kind": "bad_signature", "probability": p(0.03)},
        {"kind": "duplicate", "probability": p(0.05)},
        {"kind": "late", "delay_s": 3.0, "probability": p(0.03)},
        {"kind": "reorder", "delay_s": 1.0, "probability": p(0.03)},
        {"kind": "unknown_batch", "probability": p(0.03)},
    ]
    return [{**r, "endpoint": "webhook"} for r in rules if r["probability"] > 0]


def receiver_env(base: dict[str, str], port: int) -> dict[str, str]:
    return {
        **base,
        "OPENAI_WEBHOOK_SECRET": SECRET,
        "ORCHESTRATOR_WEBHOOK_PORT": str(port),
        "ORCHESTRATOR_LOG_LEVEL": "WARNING",
    }


def reconcile_env(poll_max_seconds: float) -> dict[str, str]:
    """Stretched polls five times the normal cap; silence after four of those."""
    return {
        "ORCHESTRATOR_POLL_INTERVAL_WITH_WEBHOOKS": str(poll_max_seconds * 5),
        "ORCHESTRATOR_WEBHOOK_SILENCE_SECONDS": str(poll_max_seconds * 20),
    }


def check_webhooks(
    problems: Problems, figures: Figures, db: Database, server: ServerSide, counters: dict[str, Any]
) -> None:
    with db.transaction() as session:
        rows = session.execute(
            select(WebhookEvent.event_type, WebhookEvent.batch_id, WebhookEvent.outcome)
        ).all()
        tracked = set(session.scalars(select(Batch.id)))
    outcomes: dict[str, int] = {}
    for event_type, batch_id, outcome in rows:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        view = server.views.get(batch_id or "")
        if view is not None:
            if event_type != f"batch.{view['status']}":
                problems.add(
                    "webhooks",
                    f"{batch_id}: recorded {event_type}, the server ended it {view['status']}",
                )
        elif batch_id in tracked:
            problems.add("webhooks", f"{batch_id}: an unknown batch's event created a batch")
        elif outcome != "ignored":
            problems.add("webhooks", f"{batch_id}: an unknown batch's event was {outcome}")
    sent: dict[str, int] = counters.get("webhooks", {})
    if sent.get("forged_acknowledged", 0):
        problems.add("webhooks", f"{sent['forged_acknowledged']} forged deliveries answered 2xx")
    figures.line("webhook events recorded", f"{len(rows)} {outcomes}")
    figures.line("webhook deliveries", sent)
