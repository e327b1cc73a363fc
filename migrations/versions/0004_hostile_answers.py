"""result files keyed by batch and file

Two batches can name the same file id (a server's mistake, or worse). Keyed by
the file id alone, the second batch's harvest found the first one's row, saw it
done and stored nothing, without a word. Keyed by (batch_id, file_id), each batch
keeps its own record, checkpoint and unreadable lines; the ingest records an
anomaly event when a file is shared.

The primary key now starts with batch_id, so the separate batch_id index goes.
A downgrade fails if a file id is shared by two batches (the old key cannot hold
that).

Revision ID: 0004_hostile_answers
Revises: 0003_months
Create Date: 2026-12-02 20:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision: str = "0004_hostile_answers"
down_revision: str | None = "0003_months"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("result_files", recreate="always") as batch_op:
        batch_op.drop_index("ix_result_files_batch_id")
        batch_op.drop_constraint("pk_result_files", type_="primary")
        batch_op.create_primary_key("pk_result_files", ["batch_id", "file_id"])
    with op.batch_alter_table("result_line_errors", recreate="always") as batch_op:
        batch_op.drop_constraint("pk_result_line_errors", type_="primary")
        batch_op.create_primary_key("pk_result_line_errors", ["batch_id", "file_id", "line_number"])


def downgrade() -> None:
    with op.batch_alter_table("result_line_errors", recreate="always") as batch_op:
        batch_op.drop_constraint("pk_result_line_errors", type_="primary")
        batch_op.create_primary_key("pk_result_line_errors", ["file_id", "line_number"])
    with op.batch_alter_table("result_files", recreate="always") as batch_op:
        batch_op.drop_constraint("pk_result_files", type_="primary")
        batch_op.create_primary_key("pk_result_files", ["file_id"])
        batch_op.create_index("ix_result_files_batch_id", ["batch_id"], unique=False)
