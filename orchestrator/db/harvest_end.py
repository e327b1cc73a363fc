"""The harvest's rows: a batch's result sums, and the harvest rules' plans written.

What a harvest moves to is decided by ``core/harvest.py`` (``observe``, ``settle``);
here the snapshots are built and the plans written. Split from polls.py
(``PollStore.finish_harvest``, ``record_poll``), which owns the transactions.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.core.harvest import (
    FileFacts,
    FileState,
    HarvestSnapshot,
    HarvestState,
    settle,
)
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.batches import event_row, plan_values
from orchestrator.db.models import Batch, ResultFile

SOURCE = "reconciler"
ERROR_CHARS = 2000


def file_sums(session: Session, batch_id: str) -> tuple[int, int]:
    results, malformed = session.execute(
        select(
            func.coalesce(func.sum(ResultFile.results), 0),
            func.coalesce(func.sum(ResultFile.malformed), 0),
        ).where(ResultFile.batch_id == batch_id)
    ).one()
    return int(results), int(malformed)


def harvest_snapshot(row: Batch, terminal_polls: int) -> HarvestSnapshot:
    return HarvestSnapshot(
        state=HarvestState(row.harvest_state),
        status=row.status,
        terminal_polls=terminal_polls,
        poll_failures=row.poll_failures,
        status_changed_at=row.status_changed_at,
        results_stored=row.results_stored,
        result_line_errors=row.result_line_errors,
    )


def settle_harvest(
    session: Session, row: Batch, now: datetime, policy: PollPolicy, u: float
) -> HarvestState:
    """Settle a locked batch's harvest from its files (``core.harvest.settle``)."""
    files = {
        f.file_id: f
        for f in session.scalars(select(ResultFile).where(ResultFile.batch_id == row.id))
    }
    known = [
        FileFacts(file_id, kind)
        if file_id not in files
        else FileFacts(file_id, kind, FileState(files[file_id].state), files[file_id].last_error)
        for kind, file_id in (("output", row.output_file_id), ("error", row.error_file_id))
        if file_id
    ]
    row.results_stored, row.result_line_errors = file_sums(session, row.id)
    changed = row.status_changed_at or now
    retry_in = policy.error_delay(
        row.poll_failures + 1, seconds_in_status=(now - changed).total_seconds(), u=u
    )
    plan = settle(harvest_snapshot(row, row.terminal_polls), known, now, retry_in)
    for name, value in plan_values(plan.changes).items():
        setattr(row, name, value)
    for event in plan.events:
        session.add(event_row(row.id, event.kind, now, SOURCE, detail=event.detail))
    return plan.state
