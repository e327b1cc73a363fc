"""The reconciler's periodic upkeep: file clean-up and pruning, each when it is due.

Each job runs at most once per its interval in this process (the interval is this
process's own schedule, compared with nothing another host wrote; the rules the
jobs apply use the database's time). A job that fails is logged and tried at its
next turn; only a database outage goes up to the loop, which rides it out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.clock import Clock
from orchestrator.errors import DatabaseUnavailable
from orchestrator.processes.cleanup import FileCleanup
from orchestrator.processes.retention import Pruner

__all__ = ["Upkeep"]

log = logging.getLogger(__name__)


@dataclass
class _Job:
    name: str
    every: timedelta
    run: Callable[[], str]
    next_at: datetime | None = None


class Upkeep:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._jobs: list[_Job] = []

    def add(self, name: str, run: Callable[[], str], *, every_seconds: float) -> None:
        """A job: ``run`` does it and says what it did, at most once per ``every_seconds``."""
        self._jobs.append(_Job(name, timedelta(seconds=every_seconds), run))

    def add_cleanup(self, cleanup: FileCleanup, *, every_seconds: float) -> None:
        self.add("file clean-up", lambda: cleanup.run_once().summary(), every_seconds=every_seconds)

    def add_prune(self, pruner: Pruner, *, older_than: timedelta, every_seconds: float) -> None:
        def prune() -> str:
            done = pruner.prune(pruner.plan(older_than, count=False))
            return (
                f"pruned {done.results} result(s), {done.line_errors} unreadable line(s) and "
                f"{done.events} event(s) of {done.batches} batch(es) ended before the cut-off, "
                f"and {done.webhook_events} webhook delivery record(s)"
            )

        self.add("prune", prune, every_seconds=every_seconds)

    def run_due(self) -> None:
        for job in self._jobs:
            now = self.clock.now()
            if job.next_at is not None and now < job.next_at:
                continue
            job.next_at = now + job.every
            try:
                said = job.run()
            except DatabaseUnavailable:
                job.next_at = None  # as soon as the database is back
                raise
            except Exception:  # one failing job never stops the reconciler
                log.exception("%s failed; trying again in %s", job.name, job.every)
                continue
            log.info("%s: %s", job.name, said, extra={"action": "upkeep"})
