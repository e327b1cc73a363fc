"""batches: the claims' order (next_poll_at, id) as one index

A claim leases the batches due earliest first, ties broken by id. With an index on
next_poll_at alone, both databases read every due row and sorted them on id to
take a few: at 10,000 batches due at one moment, a claim of 4 cost 12 ms of CPU on
SQLite and 22 ms on PostgreSQL (bench/claims.py). On (next_poll_at, id) a claim
walks the index in its own order and stops once it has its rows. The index serves
every query the one on next_poll_at alone did.

Revision ID: 0012_batches_due_order
Revises: 0011_result_files_end_checked
Create Date: 2026-12-05 03:15:00.000000
"""

from __future__ import annotations

from alembic import op

revision: str = "0012_batches_due_order"
down_revision: str | None = "0011_result_files_end_checked"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_batches_next_poll_at_id", "batches", ["next_poll_at", "id"])
    op.drop_index("ix_batches_next_poll_at", table_name="batches")


def downgrade() -> None:
    op.create_index("ix_batches_next_poll_at", "batches", ["next_poll_at"])
    op.drop_index("ix_batches_next_poll_at_id", table_name="batches")
