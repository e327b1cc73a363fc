"""This process's row in ``processes``, heartbeated from a thread of its own.

While the row is fresh, the leases this process holds last as long as they say
(``orchestrator.db.leases``); once it goes stale (a SIGKILL, a crash, a host gone)
everything the process held is free for others within seconds. The heartbeat has
its own thread so that no amount of slow work (a long harvest, a slow API) can
make a live process look dead. Its interval is measured on the monotonic clock;
what it writes is the database server's time. The beats that reached the database
are noted in ``Database.own_heartbeats``: by them the process judges whether it may
take over a silent process's leases, and whether it may still act on its own
(``orchestrator.core.liveness``).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from types import TracebackType

from orchestrator.clock import Clock
from orchestrator.core.liveness import OwnHeartbeats
from orchestrator.db.leases import ProcessRegistry
from orchestrator.errors import DatabaseError

__all__ = ["Presence"]

log = logging.getLogger(__name__)


class Presence:
    """``with Presence(...):`` registers the process, heartbeats it, marks it stopped."""

    def __init__(
        self,
        registry: ProcessRegistry,
        owner: str,
        kind: str,
        clock: Clock,
        *,
        every: float,
        stale_seconds: float,
    ) -> None:
        self.registry = registry
        self.own = OwnHeartbeats(timedelta(seconds=stale_seconds))
        self.owner = owner
        self.kind = kind
        self.clock = clock
        self.every = every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"{kind}-heartbeat", daemon=True)

    def __enter__(self) -> Presence:
        now = self.clock.now()
        self.registry.register(self.owner, self.kind, now=now)
        others = self.registry.others_heard(self.owner, now=now, within=self.own.gap)
        self.own.registered(now, others_heard=others)
        self.registry.db.own_heartbeats = self.own
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
        try:
            self.registry.stopped(self.owner, now=self.clock.now())
        except DatabaseError as error:
            log.warning("could not mark %s stopped (%s): its row goes stale", self.owner, error)

    def _beat(self) -> None:
        while not self._done.wait(self.every):
            try:
                now = self.clock.now()
                if not self.registry.beat(self.owner, now=now):
                    log.error("process row of %s is gone; re-registering", self.owner)
                    self.registry.register(self.owner, self.kind, now=now)
                self.own.beat(now)
            except DatabaseError as error:
                log.warning(
                    "heartbeat of %s failed (%s); others take over its work if this lasts",
                    self.owner,
                    error,
                    extra={"action": "heartbeat_failed"},
                )
            except Exception:  # never let the heartbeat thread die silently
                log.exception("heartbeat of %s failed unexpectedly", self.owner)
