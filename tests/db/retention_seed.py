"""Batches with results, unreadable lines and events, ended (or not) at a chosen time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, update

from orchestrator.db.batches import BatchStore, event_row
from orchestrator.db.database import Database
from orchestrator.db.models import (
    Batch,
    BatchResult,
    CancelRequest,
    ResultFile,
    ResultLineError,
    table_of,
)


def seed_batch(
    db: Database,
    batch_id: str,
    *,
    now: datetime,
    ended_at: datetime | None,
    results: int,
    line_errors: int = 2,
    status: str = "cancelled",
    harvest_state: str = "done",
) -> None:
    """``ended_at`` None: still harvesting (``retrying``)."""
    BatchStore(db).track([batch_id], now=now, source="track")
    with db.transaction() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status=status,
                harvest_state=harvest_state if ended_at is not None else "retrying",
                harvested_at=ended_at,
                next_poll_at=None,
                results_stored=results,
            )
        )
        session.add(
            CancelRequest(
                batch_id=batch_id,
                requested_at=now,
                state="closed",
                outcome="cancelled",
                attempts=1,
            )
        )
        file_id = f"file-{batch_id}"
        session.add(
            ResultFile(
                file_id=file_id,
                batch_id=batch_id,
                kind="output",
                state="done",
                lines=results + line_errors,
                lines_committed=results + line_errors,
                sha256="ab" * 32,
            )
        )
        if results:
            session.execute(
                insert(table_of(BatchResult)),
                [
                    {
                        "batch_id": batch_id,
                        "custom_id": f"req-{i}",
                        "file_id": file_id,
                        "file_kind": "output",
                        "line_number": i + 1,
                        "status_code": 200,
                        "body": {"n": i},
                    }
                    for i in range(results)
                ],
            )
        for j in range(line_errors):
            session.add(
                ResultLineError(
                    file_id=file_id,
                    line_number=results + j + 1,
                    batch_id=batch_id,
                    raw="{not json",
                    error="unreadable",
                )
            )
        when = ended_at or now
        session.add(event_row(batch_id, "harvested", when, "reconciler", detail="old"))
        session.add(event_row(batch_id, "status", now, "reconciler", detail="recent"))
