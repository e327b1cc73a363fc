"""The database server's clock: the one time every host shares.

Anything several hosts compare (a due time, an age cut-off) is measured against
this, never against the clock of the host that happens to ask.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["as_utc", "server_now", "server_now_sql"]

# SQLite's 'now' is UTC; %f keeps the milliseconds CURRENT_TIMESTAMP drops
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_POSTGRES_NOW = "statement_timestamp()"


def server_now_sql(session: Session) -> str:
    """The SQL expression for the server's time, to read it within another statement."""
    return _POSTGRES_NOW if session.get_bind().dialect.name == "postgresql" else _SQLITE_NOW


def as_utc(value: object) -> datetime:
    """What ``server_now_sql`` gave (a datetime, or SQLite's text), as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def server_now(session: Session) -> datetime:
    """The database's current time, as an aware UTC datetime."""
    return as_utc(session.scalar(text(f"SELECT {server_now_sql(session)}")))
