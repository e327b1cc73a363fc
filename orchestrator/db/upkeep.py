"""Read-only counts for the alerts of a long-running fleet: harvests, file deletions.

Kept apart from ``queries.OperatorQueries.snapshot`` (the status picture); the
metrics collector reads both on each scrape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select

from orchestrator.core.harvest import HarvestState
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, FileDeletion

__all__ = ["UpkeepSnapshot", "upkeep_snapshot"]

_STATES = tuple(state.value for state in HarvestState)


@dataclass(frozen=True)
class UpkeepSnapshot:
    harvests_by_state: dict[str, int] = field(default_factory=dict)
    # The server's end time of the terminal batch that has waited longest for its harvest:
    # its files expire (by default 30 days after the batch ended), and are lost then.
    oldest_unharvested_end: datetime | None = None
    deletions_by_state: dict[str, int] = field(default_factory=dict)


def upkeep_snapshot(db: Database) -> UpkeepSnapshot:
    ended = func.coalesce(
        Batch.completed_at,
        Batch.cancelled_at,
        Batch.expired_at,
        Batch.failed_at,
        Batch.status_changed_at,
    )
    waits = Batch.harvest_state.in_((HarvestState.PENDING.value, HarvestState.RETRYING.value))
    # Reads only (on SQLite no write lock while it scans), and batches scanned once, with
    # no GROUP BY: the count of each harvest state and the oldest end of those waiting in
    # one pass. SQLite groups by sorting every row with the columns its aggregates read:
    # at a million batches that sort cost more than the scan, and a GROUP BY with the
    # oldest end in it more than the two scans it replaced. FILTER, not sum(CASE): 1.4x
    # less on SQLite. bench/metrics_scrape.py times the two statements against this one.
    counts = [func.count().filter(Batch.harvest_state == state) for state in _STATES]
    with db.read_transaction() as session:
        row = session.execute(select(func.count(), func.min(ended).filter(waits), *counts)).one()
        total, oldest, known = int(row[0]), row[1], [int(n) for n in row[2:]]
        if sum(known) == total:
            harvests = {state: n for state, n in zip(_STATES, known, strict=True) if n}
        else:  # a state these rules do not know, stored: counted as it is
            harvests = {
                state: int(n)
                for state, n in session.execute(
                    select(Batch.harvest_state, func.count()).group_by(Batch.harvest_state)
                )
            }
        deletions = {
            state: int(n)
            for state, n in session.execute(
                select(FileDeletion.state, func.count()).group_by(FileDeletion.state)
            )
        }
    return UpkeepSnapshot(harvests, _aware(oldest), deletions)


def _aware(value: datetime | str | None) -> datetime | None:
    """An aggregate loses the column type: SQLite hands back its text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
