"""The shared stop on all sending, as read: one row of `pauses`, in SQL text so that
`status` reads it without SQLAlchemy (`db/sql_text.py`). Writes: `db/pauses.py`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.db.sql_text import Run, read_time

__all__ = ["PAUSE_SCOPE", "SendingPause", "read_pause"]

PAUSE_SCOPE = "api"


@dataclass(frozen=True)
class SendingPause:
    reason: str
    paused_at: datetime
    until: datetime


def read_pause(run: Run, now: datetime) -> SendingPause | None:
    """The pause in force at ``now`` (None once its ``until`` has passed), in the
    caller's transaction."""
    rows = list(
        run(
            "SELECT pauses.reason, pauses.paused_at, pauses.until FROM pauses "
            "WHERE pauses.scope = :scope",
            {"scope": PAUSE_SCOPE},
        )
    )
    if not rows:
        return None
    reason, paused_at, until = (rows[0][0], read_time(rows[0][1]), read_time(rows[0][2]))
    assert paused_at is not None and until is not None  # NOT NULL columns
    return SendingPause(reason, paused_at, until) if until > now else None
