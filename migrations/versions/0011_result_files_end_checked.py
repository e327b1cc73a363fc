"""result files: whether the download vouched for its end

A download with neither a Content-Length nor chunked framing ends where the
connection closed (gzipped too: a cut between two members reads as a whole body):
cut cleanly at a line's end, it looks whole.
``end_checked`` records, with a file's totals, whether its end was vouched for;
clean-up deletes no file stored in full whose end was not (false). Rows stored
before this revision keep NULL, which clean-up treats as before.

Revision ID: 0011_result_files_end_checked
Revises: 0010_walk_list_segments
Create Date: 2026-12-04 18:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011_result_files_end_checked"
down_revision: str | None = "0010_walk_list_segments"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("result_files") as table:
        table.add_column(sa.Column("end_checked", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("result_files") as table:
        table.drop_column("end_checked")
