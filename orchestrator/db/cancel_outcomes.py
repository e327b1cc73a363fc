"""How each cancel ended, beside its batch's results: the demo's closing table."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from orchestrator.core.cleanup import FileKind
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, CancelRequest, ResultFile

__all__ = ["CancelOutcome", "cancel_outcomes"]


@dataclass(frozen=True)
class CancelOutcome:
    batch_id: str
    status: str | None
    cancel: str | None  # the request's outcome, or its state while it has none
    results: int
    outputs: int  # lines of the output file: the paid-for answers kept
    requests: int | None
    seconds_to_terminal: float | None


def cancel_outcomes(db: Database) -> list[CancelOutcome]:
    """Every batch that was asked to be cancelled, in no particular order."""
    with db.transaction() as session:
        outputs: dict[str, int] = dict(
            session.execute(
                select(ResultFile.batch_id, func.sum(ResultFile.results))
                .where(ResultFile.kind == FileKind.OUTPUT)
                .group_by(ResultFile.batch_id)
            )
            .tuples()
            .all()
        )
        rows = session.execute(
            select(Batch, CancelRequest).join(CancelRequest, CancelRequest.batch_id == Batch.id)
        ).all()
        return [
            CancelOutcome(
                batch_id=batch.id,
                status=batch.status,
                cancel=request.outcome or request.state,
                results=batch.results_stored,
                outputs=int(outputs.get(batch.id) or 0),
                requests=batch.request_counts_total,
                seconds_to_terminal=request.seconds_to_terminal,
            )
            for batch, request in rows
        ]
