"""Database URLs, read without SQLAlchemy where that is safe.

Every command loads the settings, which check the database URL. SQLAlchemy parses it
(`db/engine.normalise_url`), and importing SQLAlchemy costs half a second on a slow
host: more than `orchestrator status` may take. So the plain SQLite form
(`sqlite:///PATH`, nothing to decode) is read here, exactly as SQLAlchemy reads it
(tests/unit/test_database_urls.py compares the two); every other URL still goes to
SQLAlchemy, which accepts and refuses what it always did.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "check_database_url",
    "database_passwords",
    "hide_password",
    "plain_sqlite_path",
    "shown_url",
]

# `scheme://user:password@host`: the password is everything from the first `:` after
# the `//` to the last `@` before the path (an unencoded `@` or `/` in a password
# must not let its tail through).
_PASSWORD = re.compile(r"(?P<head>^[^:/]*://[^:/@]*:)(?P<password>.*)(?P<tail>@[^@]*$)", re.S)
# `?password=...`: the query is handed to the driver, and psycopg takes a password there.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&]*", re.I | re.S)
# No query (`?`), nothing percent-encoded: what SQLAlchemy would hand over unchanged.
_PLAIN_SQLITE = re.compile(r"sqlite:///(?P<path>[^?%]+)")


def hide_password(url: str) -> str:
    """`url` with any password shown as ***; works on text that does not parse as a URL."""
    return _QUERY_PASSWORD.sub(r"\g<head>***", _PASSWORD.sub(r"\g<head>***\g<tail>", url))


def shown_url(url: URL) -> str:
    """A parsed URL as text to show, passwords hidden by `hide_password`: SQLAlchemy's
    own `hide_password=True` leaves a `?password=` of the query in plain sight."""
    return hide_password(url.render_as_string(hide_password=False))


def plain_sqlite_path(url: str) -> Path | None:
    """The file of a plain `sqlite:///PATH` URL (`~` is the home directory, as
    `normalise_url` has it); None for any other URL, in-memory and URI forms too."""
    found = _PLAIN_SQLITE.fullmatch(url)
    if found is None:
        return None
    path = found["path"]
    if path == ":memory:" or path.startswith("file:"):
        return None
    if not path.startswith("~"):
        return Path(path)
    try:
        return Path(path).expanduser()
    except RuntimeError:  # `~nosuchuser`: left to SQLAlchemy's path, which says so
        return None


def check_database_url(url: str) -> None:
    """Raise ConfigError for a URL the database layer would refuse."""
    if plain_sqlite_path(url) is None:
        from orchestrator.db.engine import normalise_url  # SQLAlchemy: only when needed

        normalise_url(url)


def database_passwords(url: str) -> tuple[str, ...]:
    """The passwords in a database URL: after the user, and any `password=` of its
    query (which the driver takes too)."""
    if plain_sqlite_path(url) is not None:
        return ()
    from sqlalchemy.engine import make_url  # only when the URL can hold one

    parsed = make_url(url)
    in_query = parsed.query.get("password", ())
    found = (parsed.password, *((in_query,) if isinstance(in_query, str) else in_query))
    return tuple(password for password in found if password)
