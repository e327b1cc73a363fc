"""forgotten batches, and the time in status by the server's timestamp

- `forgotten_batches`: the record of every batch `orchestrator forget` dropped.
- `batch_overview.seconds_in_status` counts from the server's timestamp for the current
  status (`in_progress_at`, `cancelling_at`, ...), as `orchestrator status` now does, and
  only without one from when we recorded it: a batch `sync` adopts after hours in
  progress is hours in progress, not seconds.

Revision ID: 0007_forgotten_batches
Revises: 0006_console
Create Date: 2026-12-03 04:30:00.000000
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_forgotten_batches"
down_revision: str | None = "0006_console"
branch_labels: str | None = None
depends_on: str | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


STATUS_TIMESTAMPS = (
    ("validating", "created_at"),
    ("failed", "failed_at"),
    ("in_progress", "in_progress_at"),
    ("finalizing", "finalizing_at"),
    ("completed", "completed_at"),
    ("expired", "expired_at"),
    ("cancelling", "cancelling_at"),
    ("cancelled", "cancelled_at"),
)
RECORDED = "COALESCE(b.status_changed_at, b.tracked_at)"
SERVER = (
    "COALESCE(CASE b.status "
    + " ".join(f"WHEN '{status}' THEN b.{column}" for status, column in STATUS_TIMESTAMPS)
    + f" END, {RECORDED})"
)


def _views() -> ModuleType:
    """Migration 0002, which writes the view (a file, not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location(
        "views_0002", Path(__file__).with_name("0002_operator_views.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replace_overview(since: str) -> None:
    views = _views()
    dialect = op.get_bind().dialect.name
    old = views._seconds_since(RECORDED, dialect)
    op.execute("DROP VIEW IF EXISTS batch_overview")
    op.execute(views.batch_overview(dialect).replace(old, views._seconds_since(since, dialect)))


def upgrade() -> None:
    _replace_overview(SERVER)
    op.create_table(
        "forgotten_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("forgotten_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("batch", JSON, nullable=False),
        sa.Column("cancel_request", JSON, nullable=True),
        sa.Column("results_dropped", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forgotten_batches")),
    )
    op.create_index(
        op.f("ix_forgotten_batches_batch_id"), "forgotten_batches", ["batch_id"], unique=False
    )


def downgrade() -> None:
    _replace_overview(RECORDED)
    op.drop_index(op.f("ix_forgotten_batches_batch_id"), table_name="forgotten_batches")
    op.drop_table("forgotten_batches")
