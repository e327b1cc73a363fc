"""`orchestrator status --limit 0` over more batches than a page: read from the database
as printed, a table page by page under one header, JSON written as it is read."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from typing import Any

import pytest
from sqlalchemy import update

from orchestrator.cli import status_commands
from orchestrator.cli.context import Exit
from orchestrator.cli.render import TABLE_PAGE_ROWS
from orchestrator.db.batch_filter import BatchFilter
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from orchestrator.db.sql_text import Run as Run_
from orchestrator.db.sqlite_reader import SqliteReader
from orchestrator.db.summaries import status_reading

from .conftest import Run, cli

MANY = 2 * TABLE_PAGE_ROWS + 3


@pytest.fixture
def many(database: Database, fleet_now: datetime) -> list[str]:
    ids = [f"batch_{n:05d}" for n in range(MANY)]
    BatchStore(database).track(ids, now=fleet_now, source="track")
    return ids


def test_a_long_table_is_drawn_a_page_at_a_time_under_one_header(
    run: Run, many: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[int] = []
    first_page, later_page = status_commands.status_table, status_commands.later_page

    def first(rows: list[dict[str, str]], *args: Any, **kwargs: Any) -> Any:
        drawn.append(len(rows))
        return first_page(rows, *args, **kwargs)

    def later(rows: list[dict[str, str]], layout: Any) -> Any:
        drawn.append(len(rows))
        return later_page(rows, layout)

    monkeypatch.setattr(status_commands, "status_table", first)
    monkeypatch.setattr(status_commands, "later_page", later)
    code, out, _ = run("status", "--limit", "0")
    assert code == 0
    assert drawn == [TABLE_PAGE_ROWS, TABLE_PAGE_ROWS, 3]  # never more than a page held
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("batch ")] == [lines[0]]  # one header
    rows = [line for line in lines if line.startswith("batch_")]
    assert sorted(line.split()[0] for line in rows) == many
    column = lines[0].index("status")  # later pages keep the first page's columns
    assert {line.index("unobserved") for line in rows} == {column}
    assert lines[-1] == f"{MANY} batch(es) match: {MANY} unobserved"


def test_json_of_a_long_listing_is_written_as_it_is_read_and_reads_as_one_document(
    run: Run, many: list[str]
) -> None:
    code, out, _ = run("status", "-o", "json", "--limit", "0")
    assert code == 0
    data = json.loads(out)
    assert out == json.dumps(data, indent=2) + "\n"  # as every other -o json writes
    assert sorted(b["id"] for b in data["batches"]) == many
    assert (data["shown"], data["matching"], data["more"]) == (MANY, MANY, 0)
    code, out, _ = run("status", "-o", "json", "--limit", "2", "--status", "completed")
    assert json.loads(out)["batches"] == [] and out == json.dumps(json.loads(out), indent=2) + "\n"


def test_the_rows_are_read_as_they_are_iterated_from_one_snapshot(
    database: Database, db_url: str, many: list[str], fleet_now: datetime
) -> None:
    """...without holding SQLite's write lock: a writer goes on meanwhile."""
    reader = Database.connect(db_url, read_only=True)
    with status_reading(reader, BatchFilter(), fleet_now, limit=None) as read:
        rows = read.page.rows
        assert iter(rows) is rows  # a cursor's rows, not a list
        assert read.page.shown == read.page.matching == MANY
        first = next(iter(rows))
        BatchStore(database).track(["batch_zzzzz_after"], now=fleet_now, source="track")
        assert len([first, *rows]) == MANY  # the snapshot's rows, not the new one
    reader.dispose()


def test_a_read_that_fails_part_way_says_so_after_the_rows_it_showed(
    sqlite_url: str,
    fleet_now: datetime,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No traceback and no second read (which would print the rows again): the
    database's exit code and what went wrong. (The sqlite3 reader's path.)"""
    database = Database.connect(sqlite_url)
    BatchStore(database).track(
        [f"batch_{n:05d}" for n in range(MANY)], now=fleet_now, source="track"
    )
    database.dispose()
    run = cli(sqlite_url, capsys)
    reading = SqliteReader.reading

    @contextmanager
    def failing(reader: SqliteReader) -> Iterator[Run_]:
        with reading(reader) as run_sql:

            def run_rows(sql: str, params: Mapping[str, object]) -> Iterable[Sequence[Any]]:
                rows = run_sql(sql, params)
                return _broken_after(TABLE_PAGE_ROWS + 1, rows) if "ORDER BY" in sql else rows

            yield run_rows

    monkeypatch.setattr(SqliteReader, "reading", failing)
    for fmt in ("ids", "json", "table"):
        code, out, err = run("status", "-o", fmt, "--limit", "0")
        assert code == Exit.DATABASE, (fmt, err)
        assert "reading the database failed part way: disk I/O error" in err
        assert "Traceback" not in err and out.count("batch_00000") == 1, fmt


def _broken_after(n: int, rows: Iterable[Sequence[Any]]) -> Iterator[Sequence[Any]]:
    yield from islice(rows, n)
    raise sqlite3.OperationalError("disk I/O error")


def test_later_pages_are_drawn_to_the_first_pages_widths(
    run: Run, many: list[str], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long cell on a later page is cut to its column, not widening the table past
    the terminal nor moving the columns out from under the header."""
    monkeypatch.setenv("COLUMNS", "100")
    with database.transaction() as session:
        session.execute(
            update(Batch).where(Batch.id == many[700]).values(last_error="x" * 300, model="m" * 90)
        )
    code, out, _ = run("status", "--limit", "0")
    assert code == 0
    lines = out.splitlines()
    rows = [line for line in lines if line.startswith("batch_")]
    assert len(rows) == MANY and max(len(line.rstrip()) for line in lines) <= 100
    header = lines[0]
    assert {line.index("unobserved") for line in rows} == {header.index("status")}
    errors = {line.rstrip().rindex("-") for line in rows if line != rows[700]}
    assert errors == {header.index("last error")}  # every page under the first's header
    assert rows[700].rstrip().endswith("xxxxxxxx…")  # cut to the column
