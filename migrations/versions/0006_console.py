"""console: indexes for the console's batch list orders

The console lists batches newest first (by the server's created_at, else when we
began tracking), oldest first, or by the latest status change, a page at a time
from where the last page ended. Each order is an index on (that moment, id), so a
page is an index range at any depth instead of a sort of every batch.

Revision ID: 0006_console
Revises: 0005_webhooks
Create Date: 2026-12-02 20:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006_console"
down_revision: str | None = "0005_webhooks"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(
        "ix_batches_newest",
        "batches",
        [sa.text("coalesce(created_at, tracked_at)"), "id"],
    )
    op.create_index(
        "ix_batches_changed",
        "batches",
        [sa.text("coalesce(status_changed_at, tracked_at)"), "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_batches_changed", table_name="batches")
    op.drop_index("ix_batches_newest", table_name="batches")
