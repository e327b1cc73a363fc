"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 23:42:57.282569
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "batch_results",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("line_id", sa.String(length=128), nullable=True),
        sa.Column("file_id", sa.String(length=128), nullable=False),
        sa.Column("file_kind", sa.String(length=8), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(length=128), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_results")),
        sa.UniqueConstraint(
            "batch_id", "custom_id", name=op.f("uq_batch_results_batch_id_custom_id")
        ),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=128), nullable=True),
        sa.Column("model", sa.String(length=256), nullable=True),
        sa.Column("input_file_id", sa.String(length=128), nullable=True),
        sa.Column("completion_window", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("output_file_id", sa.String(length=128), nullable=True),
        sa.Column("error_file_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("in_progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finalizing_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelling_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("request_counts_total", sa.Integer(), nullable=True),
        sa.Column("request_counts_completed", sa.Integer(), nullable=True),
        sa.Column("request_counts_failed", sa.Integer(), nullable=True),
        sa.Column("usage_input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_cached_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_reasoning_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_total_tokens", sa.BigInteger(), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "errors",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("tracked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tracked_by", sa.String(length=32), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("poll_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("terminal_polls", sa.Integer(), nullable=False),
        sa.Column("harvest_state", sa.String(length=16), nullable=False),
        sa.Column("harvested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("results_stored", sa.Integer(), nullable=False),
        sa.Column("result_line_errors", sa.Integer(), nullable=False),
        sa.Column("overdue_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batches_next_poll_at"), ["next_poll_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_batches_overdue_since"), ["overdue_since"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_batches_status"), ["status"], unique=False)

    op.create_table(
        "pauses",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_pauses")),
    )
    op.create_table(
        "processes",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
    )
    op.create_table(
        "result_line_errors",
        sa.Column("file_id", sa.String(length=128), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "line_number", name=op.f("pk_result_line_errors")),
    )
    op.create_table(
        "batch_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=True),
        sa.Column("server_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_batch_events_batch_id_batches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_events")),
    )
    with op.batch_alter_table("batch_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_batch_events_batch_id_id"), ["batch_id", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_batch_events_kind"), ["kind"], unique=False)

    op.create_table(
        "cancel_requests",
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_request_id", sa.String(length=128), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("terminal_status", sa.String(length=32), nullable=True),
        sa.Column("seconds_to_terminal", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_cancel_requests_batch_id_batches")
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_cancel_requests")),
    )
    with op.batch_alter_table("cancel_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cancel_requests_state_next_attempt_at"),
            ["state", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "result_files",
        sa.Column("file_id", sa.String(length=128), nullable=False),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("lines_committed", sa.Integer(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("malformed", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_result_files_batch_id_batches")
        ),
        sa.PrimaryKeyConstraint("file_id", name=op.f("pk_result_files")),
    )
    with op.batch_alter_table("result_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_result_files_batch_id"), ["batch_id"], unique=False)

    op.create_table(
        "cancel_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["cancel_requests.batch_id"],
            name=op.f("fk_cancel_attempts_batch_id_cancel_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cancel_attempts")),
    )
    with op.batch_alter_table("cancel_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cancel_attempts_batch_id_attempt"), ["batch_id", "attempt"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cancel_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cancel_attempts_batch_id_attempt"))

    op.drop_table("cancel_attempts")
    with op.batch_alter_table("result_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_result_files_batch_id"))

    op.drop_table("result_files")
    with op.batch_alter_table("cancel_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cancel_requests_state_next_attempt_at"))

    op.drop_table("cancel_requests")
    with op.batch_alter_table("batch_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_events_kind"))
        batch_op.drop_index(batch_op.f("ix_batch_events_batch_id_id"))

    op.drop_table("batch_events")
    op.drop_table("result_line_errors")
    op.drop_table("processes")
    op.drop_table("pauses")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_status"))
        batch_op.drop_index(batch_op.f("ix_batches_overdue_since"))
        batch_op.drop_index(batch_op.f("ix_batches_next_poll_at"))

    op.drop_table("batches")
    op.drop_table("batch_results")
