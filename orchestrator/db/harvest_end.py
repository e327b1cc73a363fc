"""The end of a harvest: a batch's result sums and its harvest state, from its files.

Split from polls.py (``PollStore.finish_harvest``), which owns the transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.core.harvest import FileState, HarvestState
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.batches import event_row
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


def apply_harvest_state(
    session: Session,
    row: Batch,
    state: HarvestState,
    files: dict[str, ResultFile],
    known: list[str],
    now: datetime,
    policy: PollPolicy,
    u: float,
) -> None:
    before = row.harvest_state
    row.harvest_state = state.value
    problems = [
        f"{files[i].kind} file {i}: {files[i].last_error}"
        for i in known
        if i in files and files[i].state != FileState.DONE and files[i].last_error
    ]
    if state is HarvestState.RETRYING:
        row.poll_failures += 1
        row.last_error = ("; ".join(problems) or "download incomplete")[:ERROR_CHARS]
        changed = row.status_changed_at or now
        delay = policy.error_delay(
            row.poll_failures, seconds_in_status=(now - changed).total_seconds(), u=u
        )
        row.next_poll_at = now + timedelta(seconds=delay)
        if before != state.value:
            session.add(event_row(row.id, "harvest_retrying", now, SOURCE, detail=row.last_error))
        return
    row.next_poll_at = None
    row.harvested_at = now
    row.poll_failures = 0
    summary = (
        f"{row.results_stored} result(s), {row.result_line_errors} unreadable line(s) "
        f"from {len(known)} file(s)"
    )
    if state is HarvestState.MISSING:
        row.last_error = "; ".join(problems)[:ERROR_CHARS] or "a result file is missing"
        session.add(
            event_row(
                row.id, "harvest_incomplete", now, SOURCE, detail=f"{summary}; {row.last_error}"
            )
        )
    else:
        row.last_error = None
        session.add(event_row(row.id, "harvested", now, SOURCE, detail=summary))
