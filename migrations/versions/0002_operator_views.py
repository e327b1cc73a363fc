"""operator views: batch_overview and cancel_overview

Read-only views for someone with only a SQL prompt (psql, sqlite3): one row per
batch with its cancel state and how long it has been in its status, and one row
per cancel request with its attempts. The SQL is the same on SQLite and
PostgreSQL except for "seconds since", which each dialect spells its own way.

A later migration that alters a column these views read must drop and recreate
them (PostgreSQL refuses to alter a column a view depends on).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _seconds_since(column: str, dialect: str) -> str:
    """Whole seconds from ``column`` to the database's now, in this dialect."""
    if dialect == "postgresql":
        return f"CAST(EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - {column})) AS BIGINT)"
    # SQLite keeps UTC as text; julianday() reads it, and 'now' is UTC too.
    return f"CAST((julianday('now') - julianday({column})) * 86400 AS INTEGER)"


def batch_overview(dialect: str) -> str:
    since = _seconds_since("COALESCE(b.status_changed_at, b.tracked_at)", dialect)
    return f"""
CREATE VIEW batch_overview AS
SELECT
    b.id AS batch_id,
    COALESCE(b.status, 'unobserved') AS status,
    b.endpoint,
    b.model,
    b.completion_window,
    b.created_at,
    b.in_progress_at,
    b.finalizing_at,
    b.completed_at,
    b.failed_at,
    b.expired_at,
    b.cancelling_at,
    b.cancelled_at,
    b.expires_at,
    b.status_changed_at,
    {since} AS seconds_in_status,
    CASE WHEN b.overdue_since IS NULL THEN 0 ELSE 1 END AS overdue,
    b.overdue_since,
    c.state AS cancel_state,
    c.outcome AS cancel_outcome,
    c.requested_at AS cancel_requested_at,
    c.requested_by AS cancel_requested_by,
    c.reason AS cancel_reason,
    c.attempts AS cancel_attempts,
    b.request_counts_total,
    b.request_counts_completed,
    b.request_counts_failed,
    b.results_stored,
    b.result_line_errors,
    b.harvest_state,
    b.harvested_at,
    b.output_file_id,
    b.error_file_id,
    COALESCE(b.last_error, c.last_error) AS last_error,
    b.tracked_at,
    b.tracked_by,
    b.last_polled_at,
    b.next_poll_at,
    b.metadata
FROM batches b
LEFT JOIN cancel_requests c ON c.batch_id = b.id
"""


CANCEL_OVERVIEW = """
CREATE VIEW cancel_overview AS
SELECT
    c.batch_id,
    COALESCE(b.status, 'unobserved') AS batch_status,
    c.state,
    c.outcome,
    CASE WHEN c.outcome LIKE 'too_late:%' THEN 1 ELSE 0 END AS too_late,
    c.requested_at,
    c.requested_by,
    c.reason,
    c.attempts,
    (SELECT COUNT(*) FROM cancel_attempts a WHERE a.batch_id = c.batch_id)
        AS attempts_recorded,
    c.last_attempt_at,
    c.last_http_status,
    c.last_request_id,
    c.last_error,
    c.next_attempt_at,
    c.accepted_at,
    c.closed_at,
    c.terminal_status,
    c.seconds_to_terminal,
    b.results_stored
FROM cancel_requests c
JOIN batches b ON b.id = c.batch_id
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(batch_overview(dialect))
    op.execute(CANCEL_OVERVIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS cancel_overview")
    op.execute("DROP VIEW IF EXISTS batch_overview")
