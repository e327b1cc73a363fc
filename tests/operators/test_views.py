"""The operator views of migration 0002 on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text

from orchestrator.db import migrate
from orchestrator.db.batch_filter import BatchFilter
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine
from orchestrator.db.summaries import read_status

from . import fleet as f
from .conftest import Fleet


def view(db: Database, name: str) -> dict[str, dict[str, Any]]:
    with db.engine.connect() as connection:
        rows = connection.execute(text(f"SELECT * FROM {name}")).mappings().all()
        connection.rollback()
    return {row["batch_id"]: dict(row) for row in rows}


def test_batch_overview_agrees_with_the_status_command(shared_fleet: Fleet) -> None:
    rows = view(shared_fleet.db, "batch_overview")
    page = read_status(shared_fleet.db, BatchFilter(), shared_fleet.now, limit=100).page
    assert set(rows) == {b.id for b in page.rows} == set(f.ALL)
    for batch in page.rows:
        row = rows[batch.id]
        assert row["status"] == (batch.status or "unobserved")
        assert row["cancel_state"] == batch.cancel_state
        assert row["cancel_outcome"] == batch.cancel_outcome
        assert row["overdue"] == int(batch.overdue)
        assert row["results_stored"] == batch.results_stored
        assert row["request_counts_total"] == batch.request_counts_total
        assert row["last_error"] == batch.last_error
        # the view reads the database's clock, a moment after the fleet was made
        expected = batch.seconds_in_status(shared_fleet.now)
        assert expected - 1 <= row["seconds_in_status"] <= expected + 60, batch.id


def test_batch_overview_spells_out_the_cancel(shared_fleet: Fleet) -> None:
    fleet = shared_fleet.db
    slow = view(fleet, "batch_overview")[f.SLOW_CANCEL]
    assert (slow["cancel_requested_by"], slow["cancel_reason"]) == ("bob", "budget")
    assert slow["cancel_attempts"] == 1 and slow["overdue_since"] is not None
    assert view(fleet, "batch_overview")[f.UNOBSERVED]["cancel_state"] is None


def test_cancel_overview_has_one_row_per_request(shared_fleet: Fleet) -> None:
    rows = view(shared_fleet.db, "cancel_overview")
    assert set(rows) == {f.IN_PROGRESS, f.SLOW_CANCEL, f.TOO_LATE, f.CANCELLED}
    late = rows[f.TOO_LATE]
    assert (late["too_late"], late["terminal_status"], late["batch_status"]) == (
        1,
        "completed",
        "completed",
    )
    assert late["results_stored"] == 3
    assert rows[f.IN_PROGRESS]["attempts_recorded"] == 1
    assert rows[f.IN_PROGRESS]["last_http_status"] == 429
    assert rows[f.CANCELLED]["too_late"] == 0


def test_the_views_come_and_go_with_their_migration(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert {"batch_overview", "cancel_overview"} <= set(inspect(engine).get_view_names())
        migrate.downgrade(engine, "0001")
        assert not {"batch_overview", "cancel_overview"} & set(inspect(engine).get_view_names())
        migrate.upgrade(engine)
        assert {"batch_overview", "cancel_overview"} <= set(inspect(engine).get_view_names())
    finally:
        engine.dispose()
