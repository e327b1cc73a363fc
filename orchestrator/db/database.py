"""A database handle: the engine, sessions, and the few dialect differences."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Engine,
    Insert,
    Table,
    TextClause,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db.engine import make_engine, require_existing_file, session_factory
from orchestrator.db.revision import require_current
from orchestrator.db.sql_text import Run
from orchestrator.errors import DatabaseBusy, DatabaseUnavailable

IDS_PER_STATEMENT = 500  # an IN list this long stays under any bind-parameter limit


def chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """`ids` a statement's worth at a time, in order."""
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        yield ids[start : start + IDS_PER_STATEMENT]


def sql_text(sql: str, params: Mapping[str, object]) -> TextClause:
    """A statement of `db/sql_text.py` as SQLAlchemy text, its values bound (a moment as a
    zone-aware timestamp, which is what every timestamp column is)."""
    return text(sql).bindparams(
        *(
            bindparam(name, value, type_=DateTime(timezone=True))
            if isinstance(value, datetime)
            else bindparam(name, value)
            for name, value in params.items()
        )
    )


def run_in(session: Session) -> Run:
    """Runs SQL text (`db/sql_text.py`) in this session's transaction."""

    def run(sql: str, params: Mapping[str, object]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in session.execute(sql_text(sql, params))]

    return run


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    @staticmethod
    def connect(
        url: str, *, pool_size: int = 10, check_schema: bool = True, read_only: bool = False
    ) -> Database:
        if check_schema:
            require_existing_file(url)
        engine = make_engine(url, pool_size=pool_size, read_only=read_only)
        if check_schema:
            try:
                require_current(engine)
            except BaseException:
                engine.dispose()
                raise
        return Database(engine, session_factory(engine))

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql` (`db/sql_text.SQLITE`, `POSTGRESQL`)."""
        return self.engine.dialect.name

    @contextmanager
    def reading(self) -> Iterator[Run]:
        """A transaction in which to run SQL text (`db/sql_text.py`)."""
        with self.transaction() as session:
            yield run_in(session)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        A lost connection surfaces as DatabaseUnavailable, and losing to another
        transaction as DatabaseBusy, so the process loops can back off and retry
        instead of dying.
        """
        try:
            with self.sessions.begin() as session:
                yield session
        except (OperationalError, DBAPIError) as exc:
            if _is_contention(exc):
                raise DatabaseBusy(
                    f"database busy, transaction rolled back: {_first_line(exc)}"
                ) from exc
            if _is_connection_problem(exc):
                raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from exc
            raise

    def serialize_on(self, session: Session, key: str) -> None:
        """Hold a lock named `key` until this transaction ends, so two transactions that
        must see each other's rows (two batches naming one file) take turns. SQLite
        transactions already take turns."""
        if self.is_postgres:
            session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        """INSERT ... ON CONFLICT DO NOTHING in this dialect; execute it with a list of rows."""
        # the dialect's module only when used: SQLite commands skip PostgreSQL's (~30 ms)
        if self.is_postgres:
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing()

    @staticmethod
    def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, object]]) -> None:
        """INSERT many rows, one executemany per distinct set of keys.

        Core takes the columns from the first row: a later row with more keys would
        lose the extra values without a word. Grouping by key set makes that
        impossible.
        """
        groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
        for row in rows:
            groups.setdefault(tuple(sorted(row)), []).append(dict(row))
        for group in groups.values():
            session.execute(insert(table), group)

    @staticmethod
    def bulk_update(
        session: Session, table: Table, key: str, rows: Sequence[Mapping[str, object]]
    ) -> None:
        """UPDATE many rows by `key`, one executemany per distinct set of columns.

        Plain Core on purpose: the ORM's bulk update by primary key falls back to
        one statement per row on drivers that do not report executemany rowcounts.
        Keys are column names (the `metadata` column, not the `metadata_` attribute).
        """
        groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
        for row in rows:
            columns = tuple(sorted(k for k in row if k != key))
            if columns:
                groups.setdefault(columns, []).append({f"_{k}": v for k, v in row.items()})
        for columns, params in groups.items():
            statement = (
                update(table)
                .where(table.c[key] == bindparam(f"_{key}"))
                .values({name: bindparam(f"_{name}") for name in columns})
            )
            session.execute(statement, params)

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _is_connection_problem(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig else str(exc).lower()
    signs = (
        "connection",
        "server closed",
        "terminating",
        "could not connect",
        "timeout",
        "unable to open database",
        "disk i/o",
        "the database system is",
    )
    return any(sign in text for sign in signs)


# PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
CONTENTION_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def _is_contention(exc: DBAPIError) -> bool:
    """Did this transaction lose to another one (and so may simply be retried)?"""
    if getattr(exc.orig, "sqlstate", None) in CONTENTION_SQLSTATES:
        return True
    text = str(exc.orig).lower() if exc.orig else ""
    return "database is locked" in text or "database table is locked" in text
