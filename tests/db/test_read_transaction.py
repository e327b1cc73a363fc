"""``Database.read_transaction``: for reads only (a scrape's counts), and nothing of it
carried into the next transaction on the same pooled connection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_a_read_transaction_reads_and_the_next_transaction_writes(database: Database) -> None:
    BatchStore(database).track(["batch_rt1"], now=T0, source="test")
    for _ in range(2):  # the same pooled connection each time: nothing may stick to it
        with database.read_transaction() as session:
            assert session.scalar(select(Batch.id)) == "batch_rt1"
        with database.transaction() as session:
            session.execute(update(Batch).values(last_error="written"))
    with database.transaction() as session:
        assert session.scalar(select(Batch.last_error)) == "written"


@pytest.mark.postgres
def test_a_write_in_a_read_transaction_fails_every_time_on_postgresql(pg_url: str) -> None:
    """On SQLite such a write fails only when another writer came first; on PostgreSQL
    it fails at once, so a misuse cannot pass the tests."""
    database = Database.connect(pg_url)
    try:
        BatchStore(database).track(["batch_rt2"], now=T0, source="test")
        refused = pytest.raises(Exception, match="read-only transaction")
        with refused, database.read_transaction() as session:
            session.execute(update(Batch).values(last_error="written"))
        with database.transaction() as session:
            assert session.scalar(select(Batch.last_error)) is None
    finally:
        database.dispose()
