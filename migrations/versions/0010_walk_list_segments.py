"""list walks in segments: the shared walk is cut at known batch ids

A walk of the batch list may be cut into segments fetched side by side: any listed
batch's id is a cursor, so a segment begins after one of ours and ends where the
next segment begins. Each segment is a row of ``list_walks`` (the walk's own row is
the first segment); ``start_id`` is the cursor it began at, so every segment knows
where the others begin, and stops there.

Revision ID: 0010_walk_list_segments
Revises: 0009_listobs_list_walks
Create Date: 2026-12-03 10:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010_walk_list_segments"
down_revision: str | None = "0009_listobs_list_walks"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("list_walks") as table:
        table.add_column(sa.Column("start_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("list_walks") as table:
        table.drop_column("start_id")
