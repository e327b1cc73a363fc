"""The shared stop on all sending (the API refused our key: 401/403): one row, read here.

Everything outside ``db/`` sees a ``SendingPause`` (plain values), never the ORM
row. The functions that take a session run inside the caller's transaction, so
a fleet snapshot or a resume reads the pause in the same view as the rest.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from orchestrator.db.database import Database, run_in
from orchestrator.db.models import Pause, table_of
from orchestrator.db.pause_state import PAUSE_SCOPE, SendingPause, read_pause

__all__ = ["PAUSE_SCOPE", "SendingPause", "active_pause_in", "lift_pause_in", "set_pause"]


def _view(row: Pause) -> SendingPause:
    return SendingPause(reason=row.reason, paused_at=row.paused_at, until=row.until)


def active_pause_in(session: Session, now: datetime) -> SendingPause | None:
    """The pause in force at ``now`` (None once its ``until`` has passed)."""
    return read_pause(run_in(session), now)


def active_pause(db: Database, now: datetime) -> SendingPause | None:
    """``active_pause_in`` in a transaction of its own (for readers such as `status`,
    which need not import the cancel store and the rules behind it)."""
    with db.transaction() as session:
        return active_pause_in(session, now)


def lift_pause_in(session: Session) -> SendingPause | None:
    """Remove the pause (locked first); returns it, or None if there was none."""
    row = session.get(Pause, PAUSE_SCOPE, with_for_update=True)
    if row is None:
        return None
    lifted = _view(row)
    session.delete(row)
    return lifted


def set_pause(db: Database, reason: str, *, now: datetime, until: datetime) -> None:
    """Pause all sending until ``until``, or later if a pause in force already ends later.

    The later ``until`` wins, with its reason: a worker whose pause is shorter (another
    ``auth_pause_seconds``, or a write that lands after a later one's) must not cut
    short the pause another set. A pause that has ended ends before any new ``until``
    (both are the database's time), so a new one replaces it."""
    values = {"reason": reason, "paused_at": now, "until": until}
    with db.transaction() as session:
        # Several workers can hit 401 at once: insert-or-ignore, then update; the update
        # only where it lengthens the pause (GREATEST, in SQL both databases run).
        session.execute(
            db.insert_ignoring_conflicts(table_of(Pause)),
            [{"scope": PAUSE_SCOPE, **values}],
        )
        session.execute(
            update(Pause).where(Pause.scope == PAUSE_SCOPE, Pause.until < until).values(**values)
        )
