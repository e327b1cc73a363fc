from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from orchestrator.db import migrate, revision
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine
from orchestrator.db.models import Base
from orchestrator.errors import NotMigrated


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    url: str = request.getfixturevalue("empty_pg_url")
    return url


def diff(url: str) -> list[object]:
    engine = make_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        result: list[object] = compare_metadata(context, Base.metadata)
    engine.dispose()
    return result


def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    engine = make_engine(empty_url)
    migrate.upgrade(engine)
    engine.dispose()
    assert diff(empty_url) == []


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    engine = make_engine(empty_url)
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert diff(empty_url) == []
    engine.dispose()


def _wait_for_a_lock_wait(engine: Engine, within: float = 60.0) -> None:
    """Until some session of this database waits on a lock (a condition, not a delay)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + within
    with engine.connect() as watcher:
        while watcher.execute(query).scalar_one() == 0:
            assert time.monotonic() < deadline, "the second upgrade never waited"
            watcher.rollback()
            time.sleep(0.05)


@pytest.mark.postgres
def test_an_upgrade_started_during_another_waits_for_it_and_succeeds(empty_pg_url: str) -> None:
    # two `db upgrade` at once (two operators, two deploy hooks): the second used to
    # see no alembic_version table, try to create it too, and die with a traceback
    engine = make_engine(empty_pg_url)
    env = {**os.environ, "ORCHESTRATOR_DATABASE_URL": empty_pg_url}
    with engine.connect() as first:  # an upgrade in progress, not yet committed
        migrate.lock_for_migrations(first)
        first.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        second = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_for_a_lock_wait(engine)
        finally:
            first.commit()
    _, err = second.communicate(timeout=120)
    engine.dispose()
    assert second.returncode == 0, err.decode()
    assert "upgraded from empty to" in err.decode()
    assert diff(empty_pg_url) == []


def test_processes_refuse_an_unmigrated_database(empty_url: str) -> None:
    with pytest.raises(NotMigrated, match="orchestrator db upgrade"):
        Database.connect(empty_url)


def test_processes_refuse_a_database_behind_head(empty_url: str) -> None:
    engine = make_engine(empty_url)
    script = ScriptDirectory.from_config(migrate.alembic_config(engine))
    revisions = [r.revision for r in script.walk_revisions()]
    if len(revisions) < 2:
        pytest.skip("only one revision so far")
    migrate.upgrade(engine, revisions[-1])
    engine.dispose()
    with pytest.raises(NotMigrated, match=f"at revision {revisions[-1]}"):
        Database.connect(empty_url)


NEWER = "0099_from_a_newer_release"


def migrated_by_a_newer_release(url: str) -> None:
    """The database as a newer release leaves it: at a revision this one does not know."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE alembic_version SET version_num = '{NEWER}'"))
    engine.dispose()


def test_processes_refuse_a_database_newer_than_this_release_and_say_so(empty_url: str) -> None:
    """`db upgrade` cannot help (alembic does not know the revision): the message names
    both revisions and says to run the newer release."""
    migrated_by_a_newer_release(empty_url)
    with pytest.raises(NotMigrated) as caught:
        Database.connect(empty_url)
    message = str(caught.value)
    assert NEWER in message and revision.head_revision() in message, message
    assert "newer release" in message and "db upgrade" not in message, message


def test_revision_files_are_numbered_in_order() -> None:
    files = sorted(p.name for p in (migrate.MIGRATIONS_DIR / "versions").glob("*.py"))
    numbers = [int(name.split("_", 1)[0]) for name in files]
    assert numbers == list(range(1, len(files) + 1))
    script = ScriptDirectory.from_config(migrate.alembic_config_for_scripts())
    assert len(script.get_heads()) == 1


def test_the_head_read_from_the_files_is_alembics() -> None:
    """The start-up check reads the head without alembic: it must name the same one."""
    script = ScriptDirectory.from_config(migrate.alembic_config_for_scripts())
    assert revision.head_revision() == script.get_current_head()


def test_the_revision_read_with_plain_sql_is_alembics(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        assert revision.current_revision(engine) is None
        migrate.upgrade(engine, "0001")
        with engine.connect() as connection:
            alembics = MigrationContext.configure(connection).get_current_revision()
        assert revision.current_revision(engine) == alembics == "0001"
    finally:
        engine.dispose()
