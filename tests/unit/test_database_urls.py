"""Plain SQLite URLs are read without SQLAlchemy (db/urls.py): exactly as SQLAlchemy
reads them, and every other URL is still left to SQLAlchemy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from orchestrator.db.engine import normalise_url, sqlite_file
from orchestrator.db.urls import check_database_url, database_passwords, plain_sqlite_path
from orchestrator.errors import ConfigError

PLAIN = [
    "sqlite:///orchestrator.sqlite3",
    "sqlite:////var/lib/orchestrator/orchestrator.sqlite3",
    "sqlite:///~/data/orchestrator.sqlite3",
    "sqlite:///a b/c@d:e#f.sqlite3",
    "sqlite:///./rel/../x.db",
]
NOT_PLAIN = [
    "sqlite://",
    "sqlite:///",
    "sqlite:///:memory:",
    "sqlite:///file:x.db?mode=ro&uri=true",
    "sqlite:///x.db?timeout=5",
    "sqlite:///a%20b.db",  # SQLAlchemy decodes it: left to SQLAlchemy
    "sqlite+pysqlite:///x.db",
    "SQLITE:///x.db",
    "sqlite://host/x.db",
    "postgresql://user:secret@db.example/orchestrator",
    "postgresql+psycopg://user@db/orchestrator",
    "mysql:///x",
    "not a url",
]


@pytest.mark.parametrize("url", PLAIN)
def test_a_plain_sqlite_url_names_the_file_sqlalchemy_names(url: str) -> None:
    assert plain_sqlite_path(url) == sqlite_file(url)
    assert make_url(url).password is None and database_passwords(url) == ()
    check_database_url(url)


@pytest.mark.parametrize("url", NOT_PLAIN)
def test_every_other_url_is_left_to_sqlalchemy(url: str) -> None:
    assert plain_sqlite_path(url) is None
    try:
        normalise_url(url)
    except ConfigError as refused:
        with pytest.raises(ConfigError) as raised:
            check_database_url(url)
        assert str(raised.value) == str(refused)
    else:
        check_database_url(url)
        assert database_passwords(url) == tuple(p for p in [make_url(url).password] if p)


def test_a_home_directory_that_cannot_be_found_is_left_to_sqlalchemy() -> None:
    assert plain_sqlite_path("sqlite:///~nosuchuser0/x.db") is None


def test_a_home_directory_that_cannot_be_found_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot find the home directory of '~nosuchuser0'"):
        normalise_url("sqlite:///~nosuchuser0/x.db")


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1))
def test_whatever_follows_the_scheme_is_read_as_sqlalchemy_reads_it(path: str) -> None:
    url = f"sqlite:///{path}"
    plain = plain_sqlite_path(url)
    if plain is None:
        return
    normalise_url(url)  # accepted by SQLAlchemy too
    assert plain == sqlite_file(url) == Path(make_url(url).database or "").expanduser()
