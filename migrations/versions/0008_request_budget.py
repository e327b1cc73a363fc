"""request budget: one shared token bucket for every worker and reconciler

With ``api_max_requests_per_second`` set, every process takes its requests' tokens
from this row, on the database server's clock, and a 429 any of them gets holds
them all back until its Retry-After has passed.

Revision ID: 0008_request_budget
Revises: 0007_forgotten_batches
Create Date: 2026-12-03 04:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008_request_budget"
down_revision: str | None = "0007_forgotten_batches"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "request_budget",
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_request_budget")),
        sa.Column("scope", sa.String(length=32), nullable=False),  # one row: "api"
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        # a 429's Retry-After: no process sends before it
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("request_budget")
