"""file clean-up and retention: file_deletions, batches.results_pruned_at

``file_deletions`` records each result or input file we delete from the API once
its batch's harvest is complete (issue 17), with every attempt's outcome and the
next attempt time for durable retries. ``results_pruned_at`` says when
``orchestrator prune`` removed a batch's result rows (its batch row is kept).

Revision ID: 0003_months
Revises: 0002
Create Date: 2026-12-02 20:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_months"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "file_deletions",
        sa.Column("file_id", sa.String(length=128), nullable=False),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_request_id", sa.String(length=128), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_file_deletions_batch_id_batches")
        ),
        sa.PrimaryKeyConstraint("file_id", name=op.f("pk_file_deletions")),
    )
    op.create_index(
        op.f("ix_file_deletions_state_next_attempt_at"),
        "file_deletions",
        ["state", "next_attempt_at"],
    )
    op.create_index(op.f("ix_file_deletions_batch_id"), "file_deletions", ["batch_id"])
    op.add_column(
        "batches", sa.Column("results_pruned_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # Plain ALTER TABLE on both (SQLite >= 3.35): a batch-mode rebuild of `batches`
    # would trip over the views of 0002 that read it.
    op.execute("ALTER TABLE batches DROP COLUMN results_pruned_at")
    op.drop_index(op.f("ix_file_deletions_batch_id"), table_name="file_deletions")
    op.drop_index(op.f("ix_file_deletions_state_next_attempt_at"), table_name="file_deletions")
    op.drop_table("file_deletions")
