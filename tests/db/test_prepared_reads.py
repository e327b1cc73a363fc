"""Statements the worker's loop runs on the driver (``Database.prepare``/``compile``,
``Prepared``): what they read must be what Core reads (each column type's result
conversion: aware UTC datetimes, JSON as objects), an IN list padded to a few sizes
must find exactly its ids, and the connection ``core_transaction`` keeps must be given
back when a transaction fails."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import literal_column, select, text

from orchestrator.core.observation import parse_batch
from orchestrator.db.batches import STATE_COLUMNS, STATE_NAMES, BatchStore, lock_requests
from orchestrator.db.cancels import CancelStore, _lock_batches
from orchestrator.db.database import Database, padded
from orchestrator.db.models import Batch
from tests.worker.fake_api import batch_body

T0 = datetime(2026, 3, 1, 12, 0, 0, 250, tzinfo=UTC)


def test_a_locking_read_on_the_driver_reads_what_core_reads(database: Database) -> None:
    body = batch_body("batch_prep1", "in_progress") | {"metadata": {"team": "a", "n": "1"}}
    BatchStore(database).record_observation(parse_batch(body), now=T0, source="test")
    with database.core_transaction() as connection:
        ours = _lock_batches(database, connection, ["batch_prep1"])["batch_prep1"]
    with database.transaction() as session:
        core = session.execute(select(*STATE_COLUMNS).where(Batch.id == "batch_prep1")).one()
    assert dict(ours.values) == dict(zip(STATE_NAMES, core, strict=True))
    assert ours.values["metadata_"] == {"team": "a", "n": "1"}
    created = ours.values["created_at"]
    assert isinstance(created, datetime) and created.tzinfo is not None
    assert created.utcoffset() == timedelta(0)


@pytest.mark.parametrize("count", [1, 3, 16, 17])
def test_a_padded_in_list_finds_exactly_its_ids(database: Database, count: int) -> None:
    ids = [f"batch_pad{count:02d}x{n:02d}" for n in range(20)]
    CancelStore(database).request(ids, now=T0, requested_by="test")
    wanted = ids[:count]
    with database.core_transaction() as connection:
        found = lock_requests(database, connection, wanted)
    assert sorted(found) == wanted
    assert {r.requested_at for r in found.values()} == {T0}


def test_padding_repeats_the_last_id_up_to_a_power_of_two() -> None:
    assert padded(["a"]) == (1, {"in0": "a"})
    size, values = padded(["a", "b", "c"])
    assert size == 4 and list(values.values()) == ["a", "b", "c", "c"]


def test_the_kept_connection_is_reused_and_given_back_when_a_transaction_fails(
    database: Database,
) -> None:
    with database.core_transaction() as first:
        first.execute(text("SELECT 1"))
    with database.core_transaction() as second:
        second.execute(text("SELECT 1"))
    assert second is first
    with pytest.raises(RuntimeError), database.core_transaction() as failing:
        assert failing is first
        raise RuntimeError("boom")
    assert first.closed
    with database.core_transaction() as fresh:
        assert fresh.execute(text("SELECT 1")).scalar() == 1
    assert fresh is not first
    database.dispose()
    assert fresh.closed


def test_a_null_is_left_as_none_only_where_the_conversion_reads_it_so(
    database: Database,
) -> None:
    """``Prepared.rows`` skips converting a NULL, but only for a conversion that reads NULL
    as None: one that makes something of NULL still runs."""
    statement = replace(
        database.compile(select(literal_column("1"))),
        sql="SELECT NULL, NULL, 1",
        results=(lambda v: "none" if v is None else v, lambda v: v, lambda v: v + 1),
    )
    with database.core_transaction() as connection:
        assert statement.rows(connection, {}) == [("none", None, 2)]


def test_the_connection_kept_for_a_thread_that_ended_goes_back_to_the_pool(
    database: Database,
) -> None:
    """A process that runs core transactions on threads that come and go (a pool's)
    must not hold a connection for every thread it ever started."""
    kept: list[object] = []

    def on_a_thread() -> None:
        with database.core_transaction() as connection:
            connection.execute(text("SELECT 1"))
            kept.append(connection)

    inside, leave = threading.Event(), threading.Event()
    live: list[object] = []

    def stays() -> None:  # a thread that lives on, its connection kept between turns
        with database.core_transaction() as connection:
            live.append(connection)
        inside.set()
        leave.wait()
        with database.core_transaction() as again:
            live.append(again)  # the same one, never closed meanwhile

    staying = threading.Thread(target=stays)
    staying.start()
    inside.wait()
    for _ in range(3):
        thread = threading.Thread(target=on_a_thread)
        thread.start()
        thread.join()
    with database.core_transaction() as mine:
        mine.execute(text("SELECT 1"))
    assert len(kept) == 3 and all(c.closed for c in kept)  # type: ignore[attr-defined]
    assert not mine.closed
    assert not live[0].closed  # type: ignore[attr-defined]
    assert database.engine.pool.checkedout() == 2  # type: ignore[attr-defined]
    leave.set()
    staying.join()
    assert live[1] is live[0]
    database.dispose()
    assert mine.closed
