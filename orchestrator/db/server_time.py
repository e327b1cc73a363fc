"""The database server's clock: the one time every host shares.

Whatever several hosts compare (a due time, an age cut-off) is measured against
this, never against the clock of the host that happens to ask.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["server_now"]


def server_now(session: Session) -> datetime:
    """The database's current time, as an aware UTC datetime."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(text("SELECT statement_timestamp()"))
    else:  # SQLite's 'now' is UTC; %f keeps the milliseconds CURRENT_TIMESTAMP drops
        raw = session.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
        value = datetime.fromisoformat(str(raw))
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
