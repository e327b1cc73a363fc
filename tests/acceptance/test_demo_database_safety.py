"""`orchestrator demo --database PATH` only ever replaces a file an earlier demo made.

An operator pointed the demo at a copy of a real database and lost it; these
tests pin that anything else at the path is refused before a byte is touched.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from orchestrator.cli.main import main
from orchestrator.db import migrate, revision
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine
from orchestrator.db.models import Batch
from orchestrator.demo import check_demo_database_path, fresh_database, is_demo_database
from orchestrator.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("ORCHESTRATOR_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def snapshot(directory: Path) -> dict[str, str]:
    """Every entry in the directory: files by content hash, the rest by kind."""
    return {
        entry.name: hashlib.sha256(entry.read_bytes()).hexdigest() if entry.is_file() else "dir"
        for entry in sorted(directory.iterdir())
    }


def track_a_cancel(url: str, batch_id: str) -> None:
    db = Database.connect(url)
    try:
        CancelStore(db).request(
            [batch_id], now=datetime.now(UTC), requested_by="operator", reason="real work"
        )
    finally:
        db.dispose()


def real_orchestrator_database(path: Path) -> None:
    """An orchestrator database as `orchestrator db upgrade` + `cancel` leave it."""
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    track_a_cancel(url, "batch_realwork0001")


def batch_count(path: Path) -> int:
    db = Database.connect(f"sqlite:///{path}")
    try:
        with db.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(Batch)) or 0)
    finally:
        db.dispose()


@pytest.mark.parametrize("flags", [[], ["--json"]], ids=["live", "json"])
def test_a_real_orchestrator_database_is_refused_and_left_byte_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    path = tmp_path / "copy.sqlite3"
    real_orchestrator_database(path)
    assert not is_demo_database(path)
    before = snapshot(tmp_path)

    code = main(["demo", *flags, "--database", str(path)])

    assert code == 2
    err = capsys.readouterr().err
    assert f"{path} exists and is not a demo database" in err
    assert "Pick another --database path, or remove the file yourself." in err
    assert snapshot(tmp_path) == before  # no side files created, not a byte changed
    assert batch_count(path) == 1


def test_a_text_file_is_refused_and_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    before = snapshot(tmp_path)

    assert main(["demo", "--database", "notes.txt"]) == 2

    assert "notes.txt exists and is not a demo database" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    assert path.read_text() == "my notes\n"


def _empty(path: Path) -> None:
    path.touch()


def _other_sqlite(path: Path) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER)")
        connection.execute("INSERT INTO ledger (amount) VALUES (42)")
        connection.commit()


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("keep me")


def _short_file_with_sqlite_magic(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00")


@pytest.mark.parametrize(
    "make",
    [_empty, _other_sqlite, _directory, _short_file_with_sqlite_magic, real_orchestrator_database],
)
def test_anything_but_a_demo_database_is_refused_before_it_is_touched(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "target"
    make(path)
    before = snapshot(tmp_path)

    with pytest.raises(ConfigError, match="not a demo database"):
        check_demo_database_path(path)
    with pytest.raises(ConfigError, match="not a demo database"):
        fresh_database(path)

    assert snapshot(tmp_path) == before


def test_a_previous_demo_database_is_recognised_and_reset(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator-demo.sqlite3"
    url = fresh_database(path)
    assert is_demo_database(path)
    # A previous run's rows, still in the WAL while a connection is open.
    db = Database.connect(url)
    CancelStore(db).request(["batch_demo0001"], now=datetime.now(UTC), requested_by="demo")
    assert Path(f"{path}-wal").exists()
    assert is_demo_database(path)
    db.dispose()
    assert batch_count(path) == 1

    assert fresh_database(path) == url

    assert is_demo_database(path)
    assert batch_count(path) == 0
    engine = make_engine(url)
    revision.require_current(engine)
    engine.dispose()


def test_an_absent_path_is_created_and_stray_side_files_go_as_before(tmp_path: Path) -> None:
    path = tmp_path / "new" / "demo.sqlite3"
    path.parent.mkdir()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").write_bytes(b"stale")

    fresh_database(path)

    assert is_demo_database(path)
    assert not Path(f"{path}-shm").exists() or Path(f"{path}-shm").read_bytes() != b"stale"
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").read_bytes() != b"stale"
