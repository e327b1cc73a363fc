"""What a process may conclude from its own heartbeats: whether it may judge others dead,
and whether it may still act on its leases.

Pure: every time is the database server's (``now`` and the beats' times are arguments).

A lease is free once its holder's heartbeat is ``stale`` old (``orchestrator.db.leases``).
That rule cannot tell a dead process from one the database could not hear: after an
outage every process's heartbeat is old, the live ones' too. So a process judges
another dead by its heartbeat only while its own beats show that the database has been
reachable for the whole of the last ``stale`` seconds: its own beats unbroken over that
time (no gap longer than ``stale / 2``), the last one at most ``stale / 2`` ago. A live
process that reaches the database as well beats within that time (it beats every
``stale / 2`` at the most: ``Settings``), so its heartbeat is never old when judged.

The other side of the same rule: a process whose own last beat is ``stale / 2`` old
stops starting anything on its leases (a worker's cancel): others may soon take them,
and the half left over is the margin for a request already on its way.

A process new to the database knows nothing of the time before it started: a
supervisor may have started it as an outage ended. It judges others at once only if
another process beat within ``stale / 2`` before it (the database was heard lately, so
an old heartbeat is a dead process's); otherwise its run begins when it starts, as
after a gap. Expired leases and stopped processes' leases are free whatever these say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["OwnHeartbeats"]


@dataclass
class OwnHeartbeats:
    """This process's heartbeats that reached the database, as far as it knows."""

    stale: timedelta
    last: datetime | None = None  # the last beat the database took
    since: datetime | None = None  # when the current unbroken run of beats began

    @property
    def gap(self) -> timedelta:
        """The longest break between beats that still counts as unbroken."""
        return self.stale / 2

    def registered(self, now: datetime, *, others_heard: bool) -> None:
        """The process's row was written at ``now``; ``others_heard``: another process
        beat within ``gap`` before, so the database was not just out."""
        self.last, self.since = now, (now - self.stale if others_heard else now)

    def beat(self, now: datetime) -> None:
        """A heartbeat the database took at ``now``; after a gap, a new run begins."""
        if self.last is None or self.since is None or now - self.last > self.gap:
            self.since = now
        self.last = now

    def fresh(self, now: datetime) -> bool:
        """Its own heartbeat is recent: nobody may take its leases for a while yet."""
        return self.last is not None and now - self.last <= self.gap

    def heard_since(self, now: datetime, since: datetime | None) -> bool:
        """``fresh``, and (given ``since``, what ``since`` was when a lease was taken) not
        a break in the beats since: a lease taken before a break may be another's now."""
        return self.fresh(now) and (since is None or self.since == since)

    def may_judge_others(self, now: datetime) -> bool:
        """The database has heard this process without a break for ``stale``: another
        process whose heartbeat is that old did not beat, rather than go unheard."""
        return self.fresh(now) and self.since is not None and now - self.since >= self.stale
