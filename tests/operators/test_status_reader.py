"""`status` on SQLite reads through sqlite3 alone (db/sqlite_reader.py), without
SQLAlchemy: it must answer exactly as the database layer does, and leave to that
layer every database it cannot read as it would."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.cli import context
from orchestrator.clock import utcnow
from orchestrator.core.status import NO_CANCEL, UNOBSERVED
from orchestrator.db import migrate, sqlite_reader
from orchestrator.db.batch_filter import BatchFilter
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine
from orchestrator.db.sqlite_reader import ReaderFailed, SqliteReader
from orchestrator.db.summaries import read_status

from . import fleet as f
from .conftest import Fleet, cli
from .fleet import populate


@pytest.fixture(scope="module")
def sqlite_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The fleet on SQLite only: the reader reads nothing else."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fleet') / 'orchestrator.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    db = Database.connect(url)
    now = utcnow()
    populate(db, now)
    yield Fleet(url, db, now)
    db.dispose()


@pytest.fixture
def reader(sqlite_fleet: Fleet) -> Iterator[SqliteReader]:
    opened = SqliteReader.open(sqlite_fleet.url)
    assert opened is not None
    yield opened
    opened.close()


def filters(fleet: Fleet) -> list[BatchFilter]:
    now = fleet.now
    return [
        BatchFilter(),
        BatchFilter(statuses=("failed", UNOBSERVED)),
        BatchFilter(statuses=(UNOBSERVED,)),
        BatchFilter(overdue=True),
        BatchFilter(cancel_requested=True),
        BatchFilter(cancel_states=("pending", NO_CANCEL)),
        BatchFilter(cancel_states=(NO_CANCEL,)),
        BatchFilter(cancel_outcomes=("too_late",)),
        BatchFilter(cancel_outcomes=("too_late:completed", "cancelled")),
        BatchFilter(cancel_outcomes=("too%",)),  # a LIKE wildcard, matched literally
        BatchFilter(created_after=now - timedelta(hours=2)),
        BatchFilter(created_before=now - timedelta(hours=2)),
        BatchFilter(metadata=(("team", "ads"),)),
        BatchFilter(metadata=(("team", "ads"), ("none", "x"))),
        BatchFilter(endpoint=f.CHAT, models=("gpt-4o-mini", "other")),
        BatchFilter(endpoints=("/v1/embeddings",)),
    ]


def test_the_reader_reads_what_the_database_layer_reads(
    sqlite_fleet: Fleet, reader: SqliteReader
) -> None:
    now = sqlite_fleet.now
    for where in filters(sqlite_fleet):
        for limit in (None, 2):
            lean = read_status(reader, where, now, limit=limit)
            full = read_status(sqlite_fleet.db, where, now, limit=limit)
            assert lean == full, where
    everything = read_status(reader, BatchFilter(), now, limit=None)
    assert {row.id for row in everything.page.rows} == set(f.ALL)  # it reads something
    assert everything.pause is not None and everything.pause.reason == f.PAUSE_REASON


def plain(url: str) -> str:
    return url.replace("sqlite:///", "sqlite+pysqlite:///", 1)  # the reader leaves it


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "-o", "wide"),
        ("status", "-o", "json"),
        ("status", "-o", "jsonl"),
        ("status", "-o", "ids"),
        ("status", "--limit", "2"),
        ("status", "--status", "expired", "--model", "nonesuch"),
        ("status", "--outcome", "too_late", "--metadata", "team=search"),
        ("status", "--cancel", "none", "-o", "json"),
    ],
)
def test_status_prints_the_same_through_either_path(
    sqlite_fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
) -> None:
    frozen = sqlite_fleet.now + timedelta(seconds=7)
    monkeypatch.setattr(sqlite_reader, "utcnow", lambda: frozen)
    monkeypatch.setattr("orchestrator.clock.utcnow", lambda: frozen)
    full = cli(plain(sqlite_fleet.url), capsys)(*args)

    def no_database_layer(*_: object, **__: object) -> None:
        raise AssertionError("status went through the database layer")

    monkeypatch.setattr(context.Context, "database", no_database_layer)
    lean = cli(sqlite_fleet.url, capsys)(*args)
    assert lean == full
    assert full[0] == 0 and full[1]


def test_a_driver_error_mid_read_falls_back_to_the_database_layer(
    sqlite_fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = cli(sqlite_fleet.url, capsys)("status", "-o", "ids")

    def failing(self: SqliteReader) -> object:
        raise ReaderFailed("disk I/O error")

    monkeypatch.setattr(SqliteReader, "reading", failing)
    assert cli(sqlite_fleet.url, capsys)("status", "-o", "ids") == expected
    assert sorted(expected[1].split()) == sorted(f.ALL)


def test_a_driver_error_surfaces_as_reader_failed(reader: SqliteReader) -> None:
    with pytest.raises(ReaderFailed, match="no such table"), reader.reading() as run:
        run("SELECT * FROM no_such_table", {})


def test_the_reader_reads_only_what_it_can_read_as_the_database_layer_would(
    tmp_path: Path, sqlite_url: str
) -> None:
    assert SqliteReader.open(sqlite_url) is not None
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello, not a database\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    behind = tmp_path / "behind.sqlite3"
    engine = make_engine(f"sqlite:///{behind}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('0001')")
    engine.dispose()
    for url in (
        "postgresql://user:pw@localhost/orchestrator",
        "sqlite://",
        "sqlite:///:memory:",
        f"sqlite:///file:{tmp_path / 'orchestrator.sqlite3'}?mode=ro&uri=true",
        plain(sqlite_url),
        sqlite_url.replace("orchestrator.sqlite3", "orchestrator%2Esqlite3"),
        f"sqlite:///{tmp_path / 'missing.sqlite3'}",
        f"sqlite:///{tmp_path}",
        f"sqlite:///{not_sqlite}",
        f"sqlite:///{fifo}",
        f"sqlite:///{empty}",
        f"sqlite:///{behind}",
    ):
        assert SqliteReader.open(url) is None, url
    assert not (tmp_path / "missing.sqlite3").exists()  # nor did it make one


def test_status_on_what_the_reader_leaves_says_what_it_always_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = cli(f"sqlite:///{tmp_path / 'missing.sqlite3'}", capsys)("status")
    assert missing[0] == 3 and "no database at" in missing[2]
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    code, _, err = cli(f"sqlite:///{empty}", capsys)("status")
    assert code == 3 and "is empty (no schema)" in err and "orchestrator db upgrade" in err


def test_the_database_layer_reads_the_same_text_on_every_backend(shared_fleet: Fleet) -> None:
    """The statements are SQL text: on PostgreSQL too they select what they should."""
    db: Database = shared_fleet.db
    read = read_status(db, BatchFilter(metadata=(("team", "ads"),)), shared_fleet.now, limit=None)
    assert {row.id for row in read.page.rows} == {f.FAILED, f.VALIDATING}
    late = read_status(db, BatchFilter(cancel_outcomes=("too_late",)), shared_fleet.now, limit=1)
    assert [row.id for row in late.page.rows] == [f.TOO_LATE] and late.page.matching == 1
