"""A database handle: the engine, sessions, and the few dialect differences."""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Connection,
    DateTime,
    Engine,
    Insert,
    Result,
    String,
    Table,
    TextClause,
    TypeDecorator,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import ReturnsRows
from sqlalchemy.sql.type_api import TypeEngine

from orchestrator.core.liveness import OwnHeartbeats
from orchestrator.db.engine import (
    READS_ONLY,
    make_engine,
    require_existing_file,
    session_factory,
    spare_connections,
)
from orchestrator.db.revision import require_current
from orchestrator.db.sql_text import ROWS_PER_FETCH, Run
from orchestrator.db.sqlite_files import SYNCHRONOUS
from orchestrator.errors import DatabaseBusy, DatabaseUnavailable

IDS_PER_STATEMENT = 500  # an IN list this long stays under any bind-parameter limit
# PostgreSQL: up to this many rows go in one statement (a multi-row INSERT, an UPDATE from
# VALUES); a larger INSERT goes by COPY. The workers' groups are 16-200 rows.
ROWS_PER_STATEMENT = 256


def chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """`ids` a statement's worth at a time, in order."""
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        yield ids[start : start + IDS_PER_STATEMENT]


@dataclass(frozen=True)
class Prepared:
    """One statement compiled once for the dialect and run on the DB-API cursor of the
    caller's transaction: its SQL in the driver's paramstyle, for each parameter the
    key that feeds it and the column type's bind processor, and for each column it
    returns the type's result processor. Values go in and come out exactly as a Core
    statement converts them (aware datetimes to UTC and back, outside text scrubbed,
    JSON as the engine serialises it), without Core's per-statement work, which cost
    more than the statements the workers run several times a second."""

    sql: str
    binds: tuple[str, ...]  # parameter names, in the statement's order if positional
    keys: tuple[str | None, ...]  # the key of each in the values given (None: a constant)
    processors: tuple[Callable[[Any], Any] | None, ...]
    constants: tuple[object, ...]  # the statement's own values, converted, where keys is None
    positional: bool
    # one per returned column; none: the statement returns no rows (``rows`` reads none)
    results: tuple[Callable[[Any], Any] | None, ...] = ()
    # PostgreSQL, an INSERT of plain columns: the same rows by COPY, its columns those of
    # ``keys`` in order. psycopg's executemany costs ~40 us of CPU a row, COPY under half.
    copy: str | None = None
    # PostgreSQL: the cursor to run ``sql`` on, psycopg's RawCursor (``sql`` has $1, $2...
    # placeholders): a cursor of %(name)s placeholders parses the statement at every call
    # (once only if it is short) and reorders a dict of values; this takes them in order.
    cursor: Callable[[Any], Any] | None = None
    # PostgreSQL, an INSERT or UPDATE by key of plain columns: the statement that writes
    # n rows at once (``many_rows``), its values those of ``keys`` row after row. One
    # statement costs a fraction of psycopg's executemany, which works row by row.
    rows_sql: Callable[[int], str] | None = None

    def _values(self, rows: Sequence[Mapping[str, object]]) -> list[list[Any]]:
        fields = tuple(zip(self.keys, self.processors, self.constants, strict=True))
        return [
            [c if k is None else row[k] if p is None else p(row[k]) for k, p, c in fields]
            for row in rows
        ]

    def params(self, rows: Sequence[Mapping[str, object]]) -> list[Any]:
        values = self._values(rows)
        if self.positional:
            return [tuple(v) for v in values]
        return [dict(zip(self.binds, v, strict=True)) for v in values]

    def _cursor(self, on: Session | Connection) -> Any:
        driver = driver_of(on)
        return driver.cursor() if self.cursor is None else self.cursor(driver)

    def rows(self, on: Session | Connection, values: Mapping[str, object]) -> list[tuple[Any, ...]]:
        """Run it once with ``values`` in ``on``'s transaction; the rows it returns."""
        cursor = self._cursor(on)
        try:
            cursor.execute(self.sql, self.params([values])[0])
            # ``results`` says whether it returns rows: psycopg builds ``description`` (a
            # Column per column) at every read, and the locking reads return ~30 columns
            found = cursor.fetchall() if self.results else []
        finally:
            cursor.close()
        converted = self._converted
        if not converted:
            return [tuple(row) for row in found]
        rows = []
        for row in found:
            cells = list(row)
            for i, process, null_is_none in converted:
                if cells[i] is not None or not null_is_none:
                    cells[i] = process(cells[i])
            rows.append(tuple(cells))
        return rows

    @functools.cached_property
    def _converted(self) -> list[tuple[int, Callable[[Any], Any], bool]]:
        """The returned columns to convert: where, how, and whether the conversion reads
        NULL as None (every type here does), so a NULL can be left as it is: a batch's row
        is mostly NULLs (timestamps not reached yet) and the recording reads 16 a tick."""
        return [(i, p, _null_is_none(p)) for i, p in enumerate(self.results) if p is not None]

    def run_many(self, on: Session | Connection, rows: Sequence[Mapping[str, object]]) -> None:
        """Run it for each of ``rows``, in ``on``'s transaction: on PostgreSQL in statements
        of many rows (``rows_sql``), a long INSERT by COPY (not in a pipeline, where COPY
        cannot run); elsewhere by the driver's executemany."""
        cursor = self._cursor(on)
        try:
            if self.rows_sql is None:  # SQLite: PostgreSQL's statements here all have rows_sql
                cursor.executemany(self.sql, self.params(rows))
                return
            if self.copy is not None and len(rows) > ROWS_PER_STATEMENT and not _pipelined(cursor):
                self._copy(cursor, rows)
                return
            for start in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = self._values(rows[start : start + ROWS_PER_STATEMENT])
                cursor.execute(self.rows_sql(len(chunk)), [v for row in chunk for v in row])
        finally:
            cursor.close()

    def _copy(self, cursor: Any, rows: Sequence[Mapping[str, object]]) -> None:
        assert self.copy is not None
        with cursor.copy(self.copy) as stream:
            for values in self._values(rows):
                stream.write_row(values)


def _pipelined(cursor: Any) -> bool:
    """Is this psycopg cursor's connection in pipeline mode (``Database.pipeline``)?"""
    return bool(cursor.connection.pgconn.pipeline_status)


def driver_of(on: Session | Connection) -> Any:
    """The DB-API connection under a session's or a connection's transaction (begun
    here if it was not yet, as ``execute`` would: SQLite's BEGIN IMMEDIATE included)."""
    connection = on.connection() if isinstance(on, Session) else on
    if not connection.in_transaction():
        connection.begin()
    return connection.connection.driver_connection


def padded(ids: Sequence[str]) -> tuple[int, dict[str, object]]:
    """An IN list's values for a statement built for a few sizes only (``in_list``,
    ``Database.rows_for_ids``):
    the size (a power of two, at least ``len(ids)``) and the values of ``in_list``,
    the last id repeated to fill it (a repeat changes no IN's answer)."""
    size = 1
    while size < len(ids):
        size *= 2
    return size, {f"in{i}": ids[min(i, len(ids) - 1)] for i in range(size)}


def in_list(size: int) -> list[BindParameter[Any]]:
    """The parameters ``_in0``... of an IN list of ``size`` values (see ``padded``)."""
    return [bindparam(f"_in{i}") for i in range(size)]


def bound_text(sql: str, params: Mapping[str, object]) -> TextClause:
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
    """Runs SQL text (`db/sql_text.py`) in this session's transaction, its rows fetched
    at once (a few: the worker reads the pause this way)."""

    def run(sql: str, params: Mapping[str, object]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in session.execute(bound_text(sql, params))]

    return run


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]
    _many: dict[tuple[str, str, tuple[str, ...]], Prepared | None] = field(
        default_factory=dict, repr=False
    )
    _prepared: dict[Hashable, Prepared] = field(default_factory=dict, repr=False)
    _key_sets: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict, repr=False)
    _numbered: Any = field(default=None, repr=False)  # see _sql_dialect
    _held: threading.local = field(default_factory=threading.local, repr=False)
    # every connection core_transaction keeps, by the thread it is kept for
    _all_held: dict[threading.Thread, Connection] = field(default_factory=dict, repr=False)
    _held_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _spare_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # This process's own heartbeats, kept by its Presence (None: no presence, as in a
    # one-off command): leases ask them before judging another process dead.
    own_heartbeats: OwnHeartbeats | None = field(default=None, repr=False)

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
        """A transaction in which to run SQL text (`db/sql_text.py`): on PostgreSQL a
        repeatable read, so its statements see one snapshot, as a read transaction on
        SQLite does (a count and the rows it counts agree)."""
        with self.transaction() as session:
            if self.is_postgres:  # the pool puts the connection's level back at check-in
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            results: list[Result[Any]] = []

            def run(sql: str, params: Mapping[str, object]) -> Result[Any]:
                # rows fetched as they are iterated: on PostgreSQL a server-side cursor
                options = {"yield_per": ROWS_PER_FETCH}
                results.append(session.execute(bound_text(sql, params), execution_options=options))
                return results[-1]

            try:
                yield run
            finally:  # a cursor whose rows were not all read ends with the transaction
                for result in results:
                    result.close()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        A lost connection surfaces as DatabaseUnavailable, and losing to another
        transaction as DatabaseBusy, so the process loops can back off and retry
        instead of dying.
        """
        with self.errors_mapped(), self.sessions.begin() as session:
            yield session

    @contextmanager
    def read_transaction(self) -> Iterator[Session]:
        """``transaction`` for statements that only read: on SQLite it begins deferred,
        so in WAL mode it neither waits for the one writer nor holds it up (``transaction``
        begins IMMEDIATE: the write lock for its whole length, which a scrape's counts over
        a million batches held for a second and more, every worker's writes waiting).
        Nothing may be written in it: on PostgreSQL it is a READ ONLY transaction, so a
        write there fails every time (on SQLite one would fail only when another writer
        came first, the deferred transaction unable to take the lock it began without)."""
        with self.transaction() as session:
            connection = session.connection(execution_options={READS_ONLY: True})
            if self.is_postgres:
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            yield session

    @contextmanager
    def durable_transaction(self) -> Iterator[Session]:
        """``transaction``, whose commit (of a transaction that writes) is on the disk when
        it returns, and with it every commit before it: for a step that cannot be taken
        back (a file deleted on the server) after what makes it safe (a harvest's rows).

        PostgreSQL's commit flushes the WAL up to it (``synchronous_commit`` is on but for
        the chunks that turn it off for themselves). SQLite's connections commit with
        ``synchronous=NORMAL``; this one commits with FULL, which syncs the WAL file,
        earlier commits' frames included, then goes back."""
        if self.is_postgres:
            with self.transaction() as session:
                yield session
            return
        with self.errors_mapped(), self.engine.connect() as connection:
            # On the driver's connection, outside any transaction (the driver is told to
            # begin none of its own: sqlite_files.set_up_connection).
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA synchronous=FULL")
            try:
                with self.sessions(bind=connection) as session, session.begin():
                    yield session
            finally:
                driver.execute(f"PRAGMA synchronous={SYNCHRONOUS}")

    @contextmanager
    def held_connection(self) -> Iterator[Connection]:
        """One connection kept for several transactions (``connection.begin()`` each), as a
        bulk writer's: no pool checkout, ping or session per transaction. Errors are
        mapped as ``transaction`` maps them."""
        with self.errors_mapped(), self.engine.connect() as connection:
            yield connection

    @contextmanager
    def spare_connection(self) -> Iterator[Connection | None]:
        """A connection held as ``held_connection``'s, if the pool can give one at once
        and still keep a quarter of its connections (at least one) free; otherwise None,
        at once. For work that goes faster with one more connection and does without it
        (ingestion's second lane): it neither waits for a connection nor leaves the
        process's other work waiting for one (a reconciler whose threads each held two
        ran its pool dry: a checkout timed out after 30 s and the process exited)."""
        connection: Connection | None = None
        with self._spare_lock:  # two downloads asking at once do not both take the last
            if spare_connections(self.engine) > 0:
                with self.errors_mapped():
                    connection = self.engine.connect()
        if connection is None:
            yield None
            return
        with self.errors_mapped(), connection:
            yield connection

    @contextmanager
    def errors_mapped(self) -> Iterator[None]:
        """DatabaseBusy / DatabaseUnavailable for a lost race or connection, whether
        SQLAlchemy raised it or the driver did (rows written through the DBAPI cursor);
        DatabaseBusy too when the pool had no connection to give in time."""
        driver_error = self.engine.dialect.loaded_dbapi.Error
        try:
            yield
        except PoolTimeout as exc:  # every connection busy elsewhere in this process
            raise DatabaseBusy(
                f"no database connection came free in time: {_first_line(exc)} "
                "(raise database_pool_size, or lower the concurrency settings)"
            ) from exc
        except (DBAPIError, driver_error) as exc:
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

    @contextmanager
    def core_transaction(self) -> Iterator[Connection]:
        """A connection in one transaction, as ``transaction`` but without a session: for
        the workers' hot paths, which run ``Prepared`` statements and need no unit of
        work. Errors are mapped as ``transaction`` maps them.

        The connection is kept for this thread's next one: no pool checkout, ping and
        check-in each time (on PostgreSQL a third of what a tick's transaction cost
        besides its statements). A transaction that fails closes it, so the next one
        checks out, and pings, a fresh one. Those kept for threads that have ended are
        given back whenever one is taken: a long-running process that starts threads
        would otherwise hold a pool connection for each until the pool ran dry."""
        with self.errors_mapped():
            connection: Connection | None = getattr(self._held, "connection", None)
            if connection is None or connection.closed or connection.invalidated:
                connection = self._held.connection = self._keep_for_this_thread()
            try:
                with connection.begin():
                    yield connection
            except BaseException:
                self._held.connection = None
                with self._held_lock:
                    self._all_held.pop(threading.current_thread(), None)
                connection.close()
                raise

    def _keep_for_this_thread(self) -> Connection:
        me = threading.current_thread()
        # A thread not started by `threading` (a C library's) is always "alive" to it:
        # its connection stays kept until dispose, as every one was before.
        with self._held_lock:
            # ended threads', and this thread's own that was invalidated
            gone = [t for t in self._all_held if t is me or not t.is_alive()]
            left = [self._all_held.pop(thread) for thread in gone]
        for connection in left:
            connection.close()  # back to the pool
        connection = self.engine.connect()
        with self._held_lock:
            self._all_held[me] = connection
        return connection

    def prepare(self, key: Hashable, build: Callable[[], ClauseElement]) -> Prepared:
        """The statement ``build`` makes, compiled once for this database (by ``key``)."""
        found = self._prepared.get(key)
        if found is None:
            found = self._prepared[key] = self.compile(build())
        return found

    def rows_for_ids(
        self,
        on: Session | Connection,
        name: str,
        build: Callable[[int], ClauseElement],
        ids: Sequence[str],
        values: Mapping[str, object] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run, in ``on``'s transaction, the statement ``build(size)`` makes for an IN list
        of ``size`` parameters (``in_list``), for ``ids``: at most ``IDS_PER_STATEMENT`` a
        statement, each list padded to a power of two (``padded``), so the statement is
        compiled once per size, not per count of ids. ``values``: its other parameters.
        The rows every statement returns, in turn."""
        rows: list[tuple[Any, ...]] = []
        for chunk in chunks(ids):
            size, filled = padded(chunk)
            statement = self.prepare((name, size), functools.partial(build, size))
            rows += statement.rows(on, {**filled, **(values or {})})
        return rows

    def insert_rows(
        self, on: Session | Connection, table: Table, rows: Sequence[Mapping[str, object]]
    ) -> None:
        """INSERT many rows, one executemany per distinct set of keys.

        Core takes the columns from the first row: a later row with more keys would
        lose the extra values without a word. Grouping by key set makes that
        impossible. A key set whose statement can be compiled once (every key a
        column, no Python-side default left out) goes to the driver's executemany
        directly (``Prepared``): the workers write thousands of rows a second this way,
        and Core's per-statement work cost more than the rows. Otherwise Core's
        INSERT, which fills in the defaults.
        """
        groups: dict[tuple[str, ...], list[Mapping[str, object]]] = {}
        for row in rows:
            groups.setdefault(self._sorted(tuple(row)), []).append(row)
        for columns, group in groups.items():
            many = self._compiled(table, "insert", columns, "")
            if many is None:
                on.execute(insert(table), [dict(row) for row in group])
            else:
                many.run_many(on, group)

    def bulk_update(
        self,
        on: Session | Connection,
        table: Table,
        key: str,
        rows: Sequence[Mapping[str, object]],
    ) -> None:
        """UPDATE many rows by `key`, one executemany per distinct set of columns.

        Plain statements on purpose: the ORM's bulk update by primary key falls back
        to one statement per row on drivers that do not report executemany rowcounts.
        Keys are column names (the `metadata` column, not the `metadata_` attribute).
        Each statement is compiled once and run by the driver's executemany (``Prepared``).
        """
        groups: dict[tuple[str, ...], dict[object, Mapping[str, object]]] = {}
        for row in rows:
            # A key twice in a group: its last row, as updating row after row would leave
            # it (one statement of many rows would take either: PostgreSQL's UPDATE ...
            # FROM uses one joined row, not saying which).
            groups.setdefault(self._sorted(tuple(row)), {})[row[key]] = row
        for keys, group in groups.items():
            columns = tuple(k for k in keys if k != key)
            if not columns:
                continue
            many = self._compiled(table, "update", columns, key)
            assert many is not None  # an UPDATE has no defaults to fill in
            many.run_many(on, list(group.values()))

    def _sorted(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        """``keys`` sorted (one statement per set of keys, in whatever order a row has
        them), remembered: the workers' rows come in a few shapes, thousands a second."""
        found = self._key_sets.get(keys)
        if found is None:
            found = self._key_sets[keys] = tuple(sorted(keys))
        return found

    def _compiled(
        self, table: Table, kind: str, columns: tuple[str, ...], key: str
    ) -> Prepared | None:
        """The statement for these columns (None: leave it to Core), compiled once."""
        cache_key = (table.name, kind + key, columns)
        if cache_key in self._many:
            return self._many[cache_key]
        names = set(table.c.keys())
        statement: UpdateBase | None = None
        copy = False
        if not set(columns) <= names or (key and key not in names):
            statement = None  # Core says what is wrong with it
        elif kind == "insert":
            left_out = [c for c in table.c if c.name not in columns]
            if not any(c.default is not None or c.onupdate is not None for c in left_out):
                statement = insert(table).values({c: bindparam(f"_{c}") for c in columns})
                copy = True
        else:
            statement = (
                update(table)
                .where(table.c[key] == bindparam(f"_{key}"))
                .values({name: bindparam(f"_{name}") for name in columns})
            )
        many = None if statement is None else self.compile(statement)
        if many is not None and copy:
            many = replace(many, copy=self._copy_of(table, many.keys))
        if many is not None and self.is_postgres:
            many = replace(many, rows_sql=self._rows_sql(table, kind, many.keys, key))
        self._many[cache_key] = many
        return many

    def _rows_sql(
        self, table: Table, kind: str, keys: Sequence[str | None], key: str
    ) -> Callable[[int], str]:
        """PostgreSQL: the statement that inserts, or updates by ``key``, n rows of the
        columns ``keys`` at once (its values row after row, in ``keys`` order), built for
        each n as asked (remembered for a few: a text is cheap to build, SQLAlchemy's
        compiling of it is not). An UPDATE joins a VALUES list on ``key``; each value is
        cast to its column's type, as SQLAlchemy casts a parameter, so a column of NULLs
        is not taken for text."""
        quote = self.engine.dialect.identifier_preparer.quote
        names = [str(k) for k in keys]
        casts = [_cast_of(self.engine.dialect, table.c[name].type) for name in names]
        target = self.engine.dialect.identifier_preparer.format_table(table)
        columns = ", ".join(quote(name) for name in names)
        if kind == "insert":
            head, tail = f"INSERT INTO {target} ({columns}) VALUES ", ""
        else:
            sets = ", ".join(f"{quote(n)} = v.{quote(n)}" for n in names if n != key)
            head = f"UPDATE {target} SET {sets} FROM (VALUES "
            tail = f") AS v ({columns}) WHERE {target}.{quote(key)} = v.{quote(key)}"

        @functools.lru_cache(maxsize=64)
        def rows_sql(n: int) -> str:
            width = len(casts)
            rows = (
                "(" + ", ".join(f"${r * width + i + 1}::{c}" for i, c in enumerate(casts)) + ")"
                for r in range(n)
            )
            return head + ", ".join(rows) + tail

        return rows_sql

    def _copy_of(self, table: Table, keys: Sequence[str | None]) -> str | None:
        """PostgreSQL's COPY of ``keys`` into ``table`` (None elsewhere)."""
        if not self.is_postgres or None in keys:
            return None
        quote = self.engine.dialect.identifier_preparer
        columns = ", ".join(quote.quote(str(k)) for k in keys)
        return f"COPY {quote.format_table(table)} ({columns}) FROM STDIN"

    def compile(self, statement: ClauseElement) -> Prepared:
        """``statement`` compiled for this dialect (the caller keeps it). A parameter
        named ``_key`` takes the value ``key``; it reads (or returns) table columns.
        On PostgreSQL with $1, $2... placeholders, run on psycopg's RawCursor."""
        dialect = self.engine.dialect
        compiled = cast(SQLCompiler, statement.compile(dialect=self._sql_dialect()))
        positional = bool(compiled.positional)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        binds = tuple(compiled.positiontup or ()) if positional else tuple(by_name)
        processors = tuple(
            by_name[b].type.dialect_impl(dialect).bind_processor(dialect) for b in binds
        )
        # a parameter named ``_key`` takes the value ``key``; any other is a value the
        # statement holds (``state == 'pending'``), converted once here
        keys = tuple(
            by_name[b].key.removeprefix("_") if by_name[b].key.startswith("_") else None
            for b in binds
        )
        constants = tuple(
            None
            if key is not None
            else (by_name[b].effective_value if p is None else p(by_name[b].effective_value))
            for b, key, p in zip(binds, keys, processors, strict=True)
        )
        returned = statement.exported_columns if isinstance(statement, ReturnsRows) else ()
        results = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in returned
        )
        return Prepared(
            compiled.string,
            binds,
            keys,
            processors,
            constants,
            positional,
            results,
            cursor=self._raw_cursor(),
        )

    def _sql_dialect(self) -> Any:
        """The dialect ``compile`` writes SQL for: the engine's, but on PostgreSQL with
        $1, $2... placeholders (``numeric_dollar``, which psycopg's RawCursor takes as is).
        Only the text differs: values are converted by the engine's own dialect."""
        if not self.is_postgres:
            return self.engine.dialect
        if self._numbered is None:
            numbered = copy.copy(self.engine.dialect)
            numbered.paramstyle, numbered.positional = "numeric_dollar", True
            self._numbered = numbered
        return self._numbered

    def _raw_cursor(self) -> Callable[[Any], Any] | None:
        if not self.is_postgres:
            return None
        from psycopg import RawCursor  # only where used: SQLite commands skip psycopg

        return RawCursor

    @contextmanager
    def pipeline(self, on: Session | Connection) -> Iterator[None]:
        """On PostgreSQL, the statements run on ``on``'s driver in here go to the server
        together and are answered together (psycopg's pipeline mode): one round trip
        for several writes whose results nobody reads. An error surfaces at the latest
        on leaving. Elsewhere nothing changes."""
        if not self.is_postgres:
            yield
            return
        with driver_of(on).pipeline():
            yield

    def dispose(self) -> None:
        with self._held_lock:
            held, self._all_held = list(self._all_held.values()), {}
        for connection in held:  # those kept by core_transaction, in any thread
            connection.close()
        self.engine.dispose()


def _null_is_none(process: Callable[[Any], Any]) -> bool:
    """Does this result processor read NULL as None?"""
    try:
        return process(None) is None
    except Exception:  # a processor that refuses None: always run it
        return False


def _cast_of(dialect: Any, type_: TypeEngine[Any]) -> str:
    """The type a value of a column of ``type_`` is cast to in PostgreSQL SQL, as
    SQLAlchemy's PostgreSQL compiler casts a bound parameter: the column's type (a type
    decorator's own), a VARCHAR without its length (a cast to VARCHAR(n) would cut a
    longer value silently where the column refuses it)."""
    impl = type_.dialect_impl(dialect)
    while isinstance(impl, TypeDecorator):
        impl = impl.load_dialect_impl(dialect)
    if isinstance(impl, String) and impl.length:
        impl = String()
    return str(dialect.type_compiler_instance.process(impl))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception: SQLAlchemy's wraps it as ``orig``."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else exc
    return orig or exc


def _is_connection_problem(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    text = str(_driver_error(exc)).lower()
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


def _is_contention(exc: BaseException) -> bool:
    """Did this transaction lose to another one (and so may simply be retried)?"""
    orig = _driver_error(exc)
    if orig is exc and isinstance(exc, DBAPIError):  # no driver error under it
        return False
    if getattr(orig, "sqlstate", None) in CONTENTION_SQLSTATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text
