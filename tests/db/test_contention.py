"""Losing to another transaction is DatabaseBusy: the loops back off and retry it.

A real lock held by a second connection, on both backends: SQLite's single
writer lock with a short busy timeout, a PostgreSQL table lock with a short
lock_timeout (SQLSTATE 55P03, like a deadlock 40P01 or a serialization failure
40001).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from orchestrator.db import engine as engine_module
from orchestrator.db.database import Database
from orchestrator.db.models import Pause
from orchestrator.errors import DatabaseBusy, DatabaseUnavailable


def test_a_lock_wait_that_runs_out_is_busy_and_the_retry_succeeds(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 20)
    holder, loser = Database.connect(db_url), Database.connect(db_url)
    try:

        def count_pauses() -> int:
            with loser.transaction() as session:
                if loser.is_postgres:
                    session.execute(text("SET LOCAL lock_timeout = '20ms'"))
                return int(session.scalar(select(func.count()).select_from(Pause)) or 0)

        with holder.transaction() as session:
            if holder.is_postgres:
                session.execute(text("LOCK TABLE pauses IN ACCESS EXCLUSIVE MODE"))
            else:  # the first statement begins IMMEDIATE: the writer lock is held
                session.execute(text("SELECT 1"))
            with pytest.raises(DatabaseBusy) as caught:
                count_pauses()
        assert isinstance(caught.value, DatabaseUnavailable)  # so every loop retries it
        message = str(caught.value)
        assert message.startswith("database busy, transaction rolled back: ")
        assert "lock" in message
        assert count_pauses() == 0  # the lock is gone: the same work now goes through
    finally:
        holder.dispose()
        loser.dispose()


def test_a_driver_error_raised_below_sqlalchemy_is_mapped_the_same_way(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Result rows go through the DBAPI cursor (db/results.py), so a lost race or
    connection there is the driver's own exception: it must still be DatabaseBusy."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 20)
    holder, loser = Database.connect(db_url), Database.connect(db_url)
    try:
        with holder.transaction() as session:
            if holder.is_postgres:
                session.execute(text("LOCK TABLE pauses IN ACCESS EXCLUSIVE MODE"))
            else:
                session.execute(text("SELECT 1"))
            with pytest.raises(DatabaseBusy) as caught, loser.held_connection() as connection:
                driver = connection.connection.driver_connection
                assert driver is not None
                if loser.is_postgres:
                    driver.execute("SET lock_timeout = '20ms'")
                    driver.execute("SELECT count(*) FROM pauses")
                else:
                    driver.execute("BEGIN IMMEDIATE")
        assert str(caught.value).startswith("database busy, transaction rolled back: ")
        assert not isinstance(caught.value.__cause__, DatabaseBusy)
    finally:
        holder.dispose()
        loser.dispose()


@pytest.mark.postgres
def test_a_pool_with_no_connection_free_in_time_is_busy_not_a_crash(pg_url: str) -> None:
    """The loops back off and retry DatabaseBusy; SQLAlchemy's pool TimeoutError, left
    as it was, ended a reconciler whose threads held every connection."""
    database = Database.connect(pg_url, pool_size=1)  # two connections at most
    database.engine.pool._timeout = 0.01  # type: ignore[attr-defined]  # not 30 s
    try:
        with (
            database.held_connection(),
            database.held_connection(),
            pytest.raises(DatabaseBusy, match="no database connection came free"),
            database.transaction() as session,
        ):
            session.execute(text("SELECT 1"))  # a session takes its connection here
        with database.transaction() as session:  # given back: the retry succeeds
            assert session.execute(text("SELECT 1")).scalar() == 1
    finally:
        database.dispose()
