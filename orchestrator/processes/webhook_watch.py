"""Whether webhook events are flowing, for the reconciler's poll policy.

One indexed query per pass: did any event arrive within the silence window, by the
database's clock? While they flow, running batches are polled on the stretched
interval. When they stop, every batch scheduled on that interval is brought forward
at once (not at its next poll, up to an hour away) and the normal policy applies.
"""

from __future__ import annotations

import logging

from orchestrator.clock import Clock
from orchestrator.db.database import Database
from orchestrator.db.webhooks import WebhookStore

__all__ = ["WebhookWatch"]

log = logging.getLogger(__name__)


class WebhookWatch:
    def __init__(
        self, db: Database, clock: Clock, silence_seconds: float, normal_max_seconds: float
    ) -> None:
        self.store = WebhookStore(db)
        self.clock = clock
        self.silence_seconds = silence_seconds
        self.normal_max_seconds = normal_max_seconds
        self.flowing = False  # as judged at the start of the last pass
        self._checked = False  # no pass yet: what an earlier process stretched is unknown

    def check(self) -> bool:
        flowing = not self.store.quiet(self.silence_seconds)
        went_quiet = self.flowing and not flowing
        # A process started while events are quiet (a restart, or each `reconcile --once`
        # from cron) never saw them stop: what another process stretched is brought
        # forward on its first pass too.
        if went_quiet or (not flowing and not self._checked):
            moved = self.store.bring_forward(
                now=self.clock.now(), within_seconds=self.normal_max_seconds
            )
            if went_quiet or moved:
                log.warning(
                    "no webhook event for %.0fs: polling as without webhooks (%d batch(es) "
                    "brought forward)",
                    self.silence_seconds,
                    moved,
                    extra={"action": "webhooks_quiet"},
                )
        elif flowing and not self.flowing:
            log.info("webhook events are flowing: polls stretched", extra={"action": "webhooks"})
        self.flowing = flowing
        self._checked = True
        return flowing
