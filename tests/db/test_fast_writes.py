"""Database.insert_rows / bulk_update run a statement compiled once through the driver
(executemany; on PostgreSQL one statement of many rows, or COPY): what they write must
be what a Core statement writes (every column type's conversion kept: aware datetimes,
outside text scrubbed and made storable), and a row that needs Core (a default to fill
in) still goes through Core."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from orchestrator.db.batches import BatchStore
from orchestrator.db.database import ROWS_PER_STATEMENT, Database
from orchestrator.db.models import (
    Batch,
    BatchEvent,
    CancelAttempt,
    CancelRequest,
    UtcDateTime,
    table_of,
)
from orchestrator.secret import Secret

T0 = datetime(2026, 3, 1, 12, 0, 0, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def attempt_row(batch_id: str, number: int, error: str | None) -> dict[str, object]:
    return {
        "batch_id": batch_id,
        "attempt": number,
        "worker": "w1",
        "started_at": T0.astimezone(PLUS_TWO),  # any zone in: UTC out
        "finished_at": T0 + timedelta(microseconds=7),
        "http_status": 200,
        "request_id": "req_1",
        "outcome": "accepted",
        "error": error,
    }


def request_row(batch_id: str) -> dict[str, object]:
    return {"batch_id": batch_id, "requested_at": T0, "state": "pending", "attempts": 0}


def rows_of(db: Database) -> list[tuple[object, ...]]:
    with db.transaction() as s:
        return [
            tuple(r)
            for r in s.execute(
                select(
                    CancelAttempt.batch_id,
                    CancelAttempt.attempt,
                    CancelAttempt.started_at,
                    CancelAttempt.finished_at,
                    CancelAttempt.error,
                ).order_by(CancelAttempt.batch_id, CancelAttempt.attempt)
            )
        ]


def test_rows_written_the_fast_way_read_back_as_cores(database: Database) -> None:
    key = Secret("sk-fast-writes-0123456789").reveal()
    BatchStore(database).track(["batch_a", "batch_b"], now=T0, source="track")
    with database.transaction() as s:
        database.insert_rows(s, table_of(CancelRequest), [request_row("batch_a")])
        s.execute(insert(table_of(CancelRequest)), [request_row("batch_b")])  # Core's way
    with database.transaction() as s:
        database.insert_rows(
            s, table_of(CancelAttempt), [attempt_row("batch_a", 1, f"bad key {key}\x00")]
        )
        s.execute(
            insert(table_of(CancelAttempt)), [attempt_row("batch_b", 1, f"bad key {key}\x00")]
        )
    fast, core = rows_of(database)
    assert fast[1:] == core[1:]
    assert fast[2] == T0 and fast[3] == T0 + timedelta(microseconds=7)
    assert key not in str(fast[4]) and "\x00" not in str(fast[4])


def test_updates_by_key_convert_as_core_and_group_by_columns(database: Database) -> None:
    BatchStore(database).track(["batch_a", "batch_b"], now=T0, source="track")
    with database.transaction() as s:
        database.insert_rows(
            s, table_of(CancelRequest), [request_row("batch_a"), request_row("batch_b")]
        )
    later = T0.astimezone(PLUS_TWO) + timedelta(seconds=5)
    with database.transaction() as s:
        database.bulk_update(
            s,
            table_of(CancelRequest),
            "batch_id",
            [
                {"batch_id": "batch_a", "state": "accepted", "accepted_at": later},
                {"batch_id": "batch_b", "attempts": 3},  # another column set
            ],
        )
    with database.transaction() as s:
        got = {
            r.batch_id: (r.state, r.accepted_at, r.attempts)
            for r in s.execute(
                select(
                    CancelRequest.batch_id,
                    CancelRequest.state,
                    CancelRequest.accepted_at,
                    CancelRequest.attempts,
                )
            )
        }
    assert got == {
        "batch_a": ("accepted", T0 + timedelta(seconds=5), 0),
        "batch_b": ("pending", None, 3),
    }


def test_updates_of_more_rows_than_a_statement_holds_with_columns_of_nulls(
    database: Database,
) -> None:
    """On PostgreSQL an UPDATE of many rows joins a VALUES list: a column that is NULL in
    every row (a timestamp, a number, text, JSON) must still be written as its column's
    type, and a group longer than one statement is split, none lost."""
    ids = [f"batch_{i:04d}" for i in range(ROWS_PER_STATEMENT + 3)]
    BatchStore(database).track(ids, now=T0, source="track")
    with database.transaction() as s:
        database.bulk_update(
            s,
            table_of(Batch),
            "id",
            [
                {"id": i, "metadata": {"team": "a"}, "errors": [1], "usage_total_tokens": 5}
                for i in ids
            ],
        )
    rows = [
        {
            "id": i,
            "status": None,
            "cancelling_at": None,
            "metadata": None,
            "errors": None,
            "usage_total_tokens": None,
            "model": "gpt" if n % 2 else None,
            "version": n,
            "updated_at": T0 + timedelta(seconds=n),
        }
        for n, i in enumerate(ids)
    ]
    with database.transaction() as s:
        database.bulk_update(s, table_of(Batch), "id", rows)
    with database.transaction() as s:
        got = [
            tuple(r)
            for r in s.execute(
                select(
                    Batch.id,
                    Batch.status,
                    Batch.cancelling_at,
                    Batch.metadata_,
                    Batch.errors,
                    Batch.usage_total_tokens,
                    Batch.model,
                    Batch.version,
                    Batch.updated_at,
                ).order_by(Batch.id)
            )
        ]
    assert got == [
        (i, None, None, None, None, None, "gpt" if n % 2 else None, n, T0 + timedelta(seconds=n))
        for n, i in enumerate(ids)
    ]


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("count", [1, 7, ROWS_PER_STATEMENT + 5])
def test_inserts_of_any_length_keep_every_row_in_order(
    database: Database, count: int, pipelined: bool
) -> None:
    """Short groups go in statements of many rows, long ones by COPY on PostgreSQL,
    except in a pipeline (where COPY cannot run): the rows are all there, in the
    order given (ids ascending), each value as given, a float NULL or not."""
    BatchStore(database).track(["batch_a"], now=T0, source="track")
    events = [
        {
            "batch_id": "batch_a",
            "kind": "status",
            "from_status": None,
            "to_status": f"s{n}",
            "server_at": None,
            "recorded_at": T0 + timedelta(seconds=n),
            "source": "worker",
            "detail": None if n % 3 else f"detail {n}",
        }
        for n in range(count)
    ]
    with database.transaction() as s:
        database.insert_rows(s, table_of(CancelRequest), [request_row("batch_a")])
        database.bulk_update(
            s,
            table_of(CancelRequest),
            "batch_id",
            [{"batch_id": "batch_a", "seconds_to_terminal": 1.5}],
        )
        with database.pipeline(s) if pipelined else contextlib.nullcontext():
            database.insert_rows(s, table_of(BatchEvent), events)
    with database.transaction() as s:
        got = [
            tuple(r)
            for r in s.execute(
                select(BatchEvent.to_status, BatchEvent.recorded_at, BatchEvent.detail)
                .where(BatchEvent.kind == "status")
                .order_by(BatchEvent.id)
            )
        ]
        waited = s.scalar(select(CancelRequest.seconds_to_terminal))
    assert got == [(e["to_status"], e["recorded_at"], e["detail"]) for e in events]
    assert waited == 1.5


def test_an_update_naming_a_key_twice_leaves_its_last_row(database: Database) -> None:
    """Row after row, the last row of a key wins; one statement of many rows must agree
    (PostgreSQL's UPDATE ... FROM would take either)."""
    ids = [f"batch_{i:03d}" for i in range(40)]
    BatchStore(database).track(ids, now=T0, source="track")
    rows = [{"id": i, "version": 1} for i in ids] + [{"id": i, "version": 2} for i in ids]
    with database.transaction() as s:
        database.bulk_update(s, table_of(Batch), "id", rows)
    with database.transaction() as s:
        assert set(s.scalars(select(Batch.version))) == {2}


def test_a_row_leaving_out_a_defaulted_column_goes_through_core(database: Database) -> None:
    with database.transaction() as s:  # polls (default 0) and others left out
        row = {"id": "batch_a", "tracked_at": T0, "tracked_by": "track", "updated_at": T0}
        database.insert_rows(s, table_of(Batch), [row])
    with database.transaction() as s:
        polls = s.scalar(select(Batch.polls).where(Batch.id == "batch_a"))
    assert polls == 0


PG_DIALECT: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("dialect", [sqlite.dialect(), PG_DIALECT], ids=["sqlite", "pg"])
def test_a_naive_datetime_is_refused(dialect: Dialect) -> None:
    process = UtcDateTime().bind_processor(dialect)
    assert process is not None
    with pytest.raises(ValueError, match="naive"):
        process(datetime(2026, 1, 1))  # noqa: DTZ001 (the point)


@pytest.mark.parametrize(
    "value",
    [T0, datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=PLUS_TWO), None],
)
def test_postgresql_timestamps_go_to_the_driver_as_aware_utc(value: datetime | None) -> None:
    process = UtcDateTime().bind_processor(PG_DIALECT)
    assert process is not None
    bound = process(value)
    assert bound == value
    assert bound is None or (isinstance(bound, datetime) and bound.tzinfo is UTC)


@pytest.mark.parametrize(
    "value",
    [
        T0,
        T0.replace(microsecond=123),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=PLUS_TWO),
        datetime(999, 1, 1, tzinfo=UTC),
        None,
    ],
)
def test_sqlite_timestamps_are_the_text_sqlalchemy_stores(value: datetime | None) -> None:
    dialect = sqlite.dialect()
    ours = UtcDateTime().bind_processor(dialect)
    theirs = sqlite.DATETIME().bind_processor(dialect)  # type: ignore[no-untyped-call]
    assert ours is not None and theirs is not None
    naive = None if value is None else value.astimezone(UTC).replace(tzinfo=None)
    assert ours(value) == theirs(naive)
