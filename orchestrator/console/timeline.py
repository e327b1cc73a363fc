"""A batch's life as one list of moments, oldest first: the server's timestamps
(created, in progress, cancelling, ...) beside ours (tracked, cancel requested,
accepted, closed, harvested). Pure: it reads a BatchView and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.db.browse import BatchView

SERVER_MOMENTS = (
    ("created_at", "created"),
    ("in_progress_at", "in progress"),
    ("finalizing_at", "finalizing"),
    ("cancelling_at", "cancelling"),
    ("cancelled_at", "cancelled"),
    ("completed_at", "completed"),
    ("failed_at", "failed"),
    ("expired_at", "expired"),
    ("expires_at", "expires (deadline)"),
)
OUR_BATCH_MOMENTS = (
    ("tracked_at", "tracking began"),
    ("harvested_at", "results harvested"),
    ("results_pruned_at", "result rows pruned"),
)
OUR_CANCEL_MOMENTS = (
    ("requested_at", "cancel requested"),
    ("accepted_at", "cancel accepted"),
    ("closed_at", "cancel closed"),
)


@dataclass(frozen=True)
class Moment:
    at: datetime
    what: str
    whose: str  # "server" (the API's timestamp) or "ours" (recorded here)
    seconds_from_start: float


def timeline(view: BatchView) -> list[Moment]:
    found: list[tuple[datetime, str, str]] = []
    for column, what in SERVER_MOMENTS:
        if isinstance(at := view.batch.get(column), datetime):
            found.append((at, what, "server"))
    for column, what in OUR_BATCH_MOMENTS:
        if isinstance(at := view.batch.get(column), datetime):
            found.append((at, what, "ours"))
    for column, what in OUR_CANCEL_MOMENTS:
        if view.cancel_request is not None and isinstance(
            at := view.cancel_request.get(column), datetime
        ):
            found.append((at, what, "ours"))
    found.sort(key=lambda item: item[0])
    if not found:
        return []
    start = found[0][0]
    return [Moment(at, what, whose, (at - start).total_seconds()) for at, what, whose in found]
