"""Statements written once as SQL text, run through SQLAlchemy or the DB-API alike.

A few reads are written as text so that `orchestrator status` on SQLite can run them
through `sqlite3` directly, without importing SQLAlchemy (half a second of start-up on
a slow host), while every other caller runs the very same text through a session
(`Database.reading`). A statement takes its parameters by name (`:name`, which
both `sqlite3` and SQLAlchemy's `text()` understand), and its values already in the
form the dialect stores: this module is the one place that knows those forms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.core import json_text

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "Params",
    "Run",
    "bind_time",
    "in_list",
    "postgres_time",
    "read_json",
    "read_time",
]

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

Params = dict[str, object]
# Runs one statement in the caller's transaction; its rows are fetched as they are
# iterated (on PostgreSQL ROWS_PER_FETCH at a time), so a long listing is never held
# whole: iterate them inside that transaction.
Run = Callable[[str, Mapping[str, object]], Iterable[Sequence[Any]]]
ROWS_PER_FETCH = 500


# How SQLAlchemy's SQLite DATETIME stores a moment (naive UTC here, see
# db/models.UtcDateTime): text that sorts as time does, so comparing texts is exact.
@functools.lru_cache(maxsize=4096)
def sqlite_time(moment: datetime) -> str:
    """An aware moment as SQLite's timestamp columns hold it: the text SQLAlchemy's
    DATETIME stores (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC), made in one C call because every
    timestamp a worker writes comes through here (`db/models.UtcDateTime`). Remembered:
    a worker's recording writes each answer's moment in six to eight columns, and the
    formatting (~5 us) cost more than the statements; equal moments in any zone are the
    same UTC text, and a naive one raises (an exception is never remembered)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass an aware UTC datetime")
    return moment.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")[:26]


def postgres_time(moment: datetime) -> datetime:
    """An aware moment as psycopg takes it for PostgreSQL's timestamp columns: in UTC (as
    it is when it already is: every timestamp a worker writes comes through here); a
    naive one raises."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass an aware UTC datetime")
    return moment.astimezone(UTC)


def bind_time(dialect: str, moment: datetime) -> object:
    """An aware moment as the dialect's timestamp columns hold it."""
    return sqlite_time(moment) if dialect == SQLITE else postgres_time(moment)


def read_time(value: object) -> datetime | None:
    """A timestamp column's value (SQLite's text, PostgreSQL's datetime) as aware UTC,
    read as `UtcDateTime` reads it."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_json(value: object) -> Any:
    """A JSON column's value: SQLite gives its text, PostgreSQL's driver the object."""
    if isinstance(value, str | bytes):
        return json_text.loads(value)
    return value


def in_list(name: str, values: Iterable[object], params: Params) -> str:
    """`:name_0, :name_1, ...` for an IN list, the values added to `params`."""
    names = []
    for i, value in enumerate(values):
        params[f"{name}_{i}"] = value
        names.append(f":{name}_{i}")
    if not names:
        raise ValueError(f"an empty IN list for {name}")
    return ", ".join(names)
