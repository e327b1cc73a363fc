"""list walks: the reconcilers share one walk of the batch list

Several reconcilers observing through ``GET /v1/batches`` pages take turns on one
walk: this row holds its cursor and whose turn it is to fetch the next page, so each
page is fetched once whatever the number of reconcilers, and they record pages in
parallel.

Revision ID: 0009_listobs_list_walks
Revises: 0008_request_budget
Create Date: 2026-12-03 07:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009_listobs_list_walks"
down_revision: str | None = "0008_request_budget"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "list_walks",
        sa.PrimaryKeyConstraint("name", name=op.f("pk_list_walks")),
        sa.Column("name", sa.String(length=32), nullable=False),  # one row: "batches"
        sa.Column("lease_owner", sa.String(length=128), nullable=True),  # the turn
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("after_id", sa.String(length=128), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("lean", sa.Integer(), nullable=False),
        sa.Column("reached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended", sa.String(length=200), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("list_walks")
