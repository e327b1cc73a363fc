"""What a scrape of /metrics costs the database: every process serves one, and each
scrape counts over the whole fleet (bench/metrics_scrape.py measures it at scale). The
operators' other reads share its transactions: none may hold up SQLite's one writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from orchestrator.clock import utcnow
from orchestrator.db import sqlite_files
from orchestrator.db.batch_filter import BatchFilter
from orchestrator.db.database import Database
from orchestrator.db.engine import sqlite_file
from orchestrator.db.models import Batch
from orchestrator.db.queries import OperatorQueries
from orchestrator.db.upkeep import upkeep_snapshot
from orchestrator.metrics import DatabaseCollector
from tests.sql_statements import sent_through

from . import fleet as f


def scrape(db: Database) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


@contextmanager
def sqlite_writer(url: str) -> Iterator[sqlite3.Connection]:
    """A second connection, as another process's writer (giving up on a lock at once)."""
    path = sqlite_file(url)
    assert path is not None
    with closing(sqlite3.connect(path, timeout=0.3, isolation_level=None)) as writer:
        yield writer


def test_a_scrape_neither_waits_for_nor_holds_up_the_sqlite_writer(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape's counts scan every batch (a second and more at a million): in a
    transaction that began IMMEDIATE they held SQLite's one write lock all along, every
    worker's writes waiting, and waited themselves for a writer's. They only read."""
    monkeypatch.setattr(sqlite_files, "SQLITE_BUSY_TIMEOUT_MS", 300)  # a wait fails fast
    db = Database.connect(sqlite_url)
    try:
        f.populate(db, utcnow())
        with sqlite_writer(sqlite_url) as writer:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE batches SET version = version + 1")
            try:
                samples = scrape(db)  # while another process holds the write lock
            finally:
                writer.execute("ROLLBACK")
            assert samples[("orchestrator_database_up", ())] == 1
            assert samples[("orchestrator_batches_overdue", ())] == 1

            with db.read_transaction() as session:  # a scrape's transaction, open
                assert session.scalar(select(func.count()).select_from(Batch)) == len(f.ALL)
                writer.execute("BEGIN IMMEDIATE")  # the writer is not kept waiting
                writer.execute("UPDATE batches SET version = version + 1")
                writer.execute("COMMIT")
    finally:
        db.dispose()


def test_harvest_counts_and_the_oldest_waiting_end_come_from_one_scan(
    fleet: Database, fleet_now: datetime
) -> None:
    """The counts of each harvest state and the oldest end of a batch waiting for its
    harvest (pending or retrying) are one statement over batches, not two scans (nor a
    GROUP BY, which SQLite makes by sorting every row)."""
    hours = [fleet_now - timedelta(hours=n) for n in range(11)]
    f.set_columns(fleet, f.TOO_LATE, harvest_state="pending", completed_at=hours[3])
    f.set_columns(
        fleet, f.CANCELLED, harvest_state="retrying", completed_at=None, cancelled_at=hours[2]
    )
    f.set_columns(fleet, f.EXPIRED, harvest_state="done", expired_at=hours[10])  # not waiting
    with fleet.transaction() as session:
        expected = dict(
            session.execute(
                select(Batch.harvest_state, func.count()).group_by(Batch.harvest_state)
            ).all()
        )
    with sent_through(fleet.engine) as seen:
        upkeep = upkeep_snapshot(fleet)
    statements = [" ".join(statement.split()) for statement, _ in seen]
    assert upkeep.harvests_by_state == expected
    assert expected["pending"] == 1 and expected["retrying"] == 1
    assert upkeep.oldest_unharvested_end == hours[3]
    over_batches = [s for s in statements if "FROM batches" in s]
    assert len(over_batches) == 1 and "GROUP BY" not in over_batches[0], statements

    f.set_columns(fleet, f.TOO_LATE, harvest_state="done")
    assert upkeep_snapshot(fleet).oldest_unharvested_end == hours[2]
    f.set_columns(fleet, f.CANCELLED, harvest_state="missing")
    assert upkeep_snapshot(fleet).oldest_unharvested_end is None
    f.set_columns(fleet, f.FAILED, harvest_state="someday")  # no state of these rules
    assert upkeep_snapshot(fleet).harvests_by_state["someday"] == 1


def test_an_operators_reads_neither_wait_for_nor_hold_up_the_sqlite_writer(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`show`, `results` and a bulk cancel's plan read through ``OperatorQueries`` on a
    read-write engine: each transaction began IMMEDIATE, so a `results` export took the
    write lock for every page, and every read waited for any writer first."""
    monkeypatch.setattr(sqlite_files, "SQLITE_BUSY_TIMEOUT_MS", 300)  # a wait fails fast
    db = Database.connect(sqlite_url)
    try:
        f.populate(db, utcnow())
        queries = OperatorQueries(db)
        with sqlite_writer(sqlite_url) as writer:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE batches SET version = version + 1")
            try:  # while another process holds the write lock
                assert len(list(queries.iter_results(f.TOO_LATE))) == 3
                assert queries.detail(f.CANCELLED) is not None
                assert set(queries.summaries([f.FAILED])) == {f.FAILED}
                assert set(queries.batches([f.FAILED])) == {f.FAILED}
                assert queries.known_ids([f.FAILED, "batch_nothere"]) == {f.FAILED}
                assert queries.ids_named_by("batch_fail", limit=5) == [f.FAILED]
                chosen = queries.select_batches(BatchFilter(statuses=("failed",)))
                assert [b.id for b in chosen] == [f.FAILED]
            finally:
                writer.execute("ROLLBACK")
    finally:
        db.dispose()
