"""Retention: remove the result rows and events of batches that ended long ago.

Only batches that ended (``core.cleanup.may_prune``: terminal, harvest settled)
before a cut-off taken from the database's clock lose rows: their
``batch_results``, ``result_line_errors``, and the ``batch_events`` recorded
before the cut-off. The batch row, its cancel request and attempts, and its
``result_files`` (lines, bytes, sha256: what we had) are kept.

Every delete is its own short transaction of at most ``chunk_rows`` rows, picked
by key, so a prune never holds locks the reconciler waits on for long, and an
interrupted prune simply leaves less to do next time. ``results_pruned_at`` is set
by the first of them that removes a result or unreadable line of the batch: it means
"this batch's results are being, or have been, pruned".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from sqlalchemy import Delete, Text, cast, delete, func, select, tuple_, update

from orchestrator.core import json_text
from orchestrator.core.cleanup import may_prune
from orchestrator.core.harvest import HarvestState
from orchestrator.db.database import Database, chunks
from orchestrator.db.models import Batch, BatchEvent, BatchResult, ResultLineError, WebhookEvent
from orchestrator.db.server_time import server_now

__all__ = ["PruneCounts", "RetentionStore"]

CHUNK_ROWS = 5000
ARCHIVE_PAGE_ROWS = 1000

# The body as the stored text, not read through the JSON column (orjson would turn a
# long integer into a float, keep one of two equal keys, round a long decimal): the
# archive may become its only copy. The column is ``json`` (stored as sent) on both
# databases, so its text is what the server sent.
_ARCHIVE_RESULT_COLUMNS = [
    cast(c, Text).label("body") if c.key == "body" else c for c in BatchResult.__table__.columns
]


@dataclass
class PruneCounts:
    batches: int = 0
    results: int = 0
    line_errors: int = 0
    events: int = 0
    webhook_events: int = 0  # deliveries received before the cut-off, of any batch

    def add(self, other: PruneCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class RetentionStore:
    def __init__(self, db: Database, *, chunk_rows: int = CHUNK_ROWS) -> None:
        self.db = db
        self.chunk_rows = chunk_rows

    def cutoff(self, older_than: timedelta) -> datetime:
        """``older_than`` before the database's now."""
        with self.db.transaction() as session:
            return server_now(session) - older_than

    def ended_before(self, cutoff: datetime, *, after: str | None, limit: int) -> list[str]:
        """Ids (in order, after ``after``) of batches that ended before ``cutoff``."""
        statement = (
            select(Batch.id, Batch.status, Batch.harvest_state, Batch.harvested_at)
            .where(
                Batch.harvest_state.in_((HarvestState.DONE.value, HarvestState.MISSING.value)),
                Batch.harvested_at < cutoff,
            )
            .order_by(Batch.id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(Batch.id > after)
        with self.db.transaction() as session:
            rows = session.execute(statement).all()
        return [
            batch_id
            for batch_id, status, harvest, harvested in rows
            if may_prune(
                status=status, harvest_state=harvest, harvested_at=harvested, cutoff=cutoff
            )
        ]

    def count(self, batch_ids: Sequence[str], cutoff: datetime) -> PruneCounts:
        """What pruning these batches would remove."""
        found = PruneCounts()
        with self.db.transaction() as session:
            for ids in chunks(batch_ids):
                results = session.scalar(select(func.count()).where(BatchResult.batch_id.in_(ids)))
                errors = session.scalar(
                    select(func.count()).where(ResultLineError.batch_id.in_(ids))
                )
                events = session.scalar(
                    select(func.count()).where(
                        BatchEvent.batch_id.in_(ids), BatchEvent.recorded_at < cutoff
                    )
                )
                found.add(PruneCounts(0, int(results or 0), int(errors or 0), int(events or 0)))
        found.batches = len(batch_ids)
        return found

    def iter_archive(self, batch_id: str) -> Iterator[tuple[int, dict[str, object]]]:
        """(result id or 0, record) for every result row and unreadable line of the batch,
        a page per short transaction."""
        after = 0
        while True:
            with self.db.transaction() as session:
                page = session.execute(
                    select(*_ARCHIVE_RESULT_COLUMNS)
                    .where(BatchResult.batch_id == batch_id, BatchResult.id > after)
                    .order_by(BatchResult.id)
                    .limit(ARCHIVE_PAGE_ROWS)
                ).all()
            for row in page:
                record: dict[str, object] = {"record": "result", **row._asdict()}
                if row.body is not None:
                    record["body"] = json_text.Fragment(row.body)  # written as it is
                yield row.id, record
            if len(page) < ARCHIVE_PAGE_ROWS:
                break
            after = page[-1].id
        with self.db.transaction() as session:
            errors = session.scalars(
                select(ResultLineError)
                .where(ResultLineError.batch_id == batch_id)
                .order_by(ResultLineError.file_id, ResultLineError.line_number)
            ).all()
        for error in errors:
            yield (
                0,
                {
                    "record": "line_error",
                    **{c.key: getattr(error, c.key) for c in ResultLineError.__table__.columns},
                },
            )

    def count_webhook_events(self, cutoff: datetime) -> int:
        with self.db.transaction() as session:
            return int(
                session.scalar(select(func.count()).where(WebhookEvent.received_at < cutoff)) or 0
            )

    def prune_webhook_events(
        self, cutoff: datetime, *, on_chunk: Callable[[], None] = lambda: None
    ) -> int:
        """Remove the deliveries received before ``cutoff`` (the database's time), which
        are kept only to know a redelivery (the sender retries for days, not weeks) and
        whether events are flowing (minutes); ``chunk_rows`` per transaction."""
        old = select(WebhookEvent.webhook_id).where(WebhookEvent.received_at < cutoff)
        return self._drain(
            lambda: delete(WebhookEvent).where(
                WebhookEvent.webhook_id.in_(old.limit(self.chunk_rows))
            ),
            on_chunk,
        )

    def prune_batch(
        self,
        batch_id: str,
        cutoff: datetime,
        *,
        max_result_id: int | None = None,
        on_chunk: Callable[[], None] = lambda: None,
    ) -> PruneCounts:
        """Remove the batch's rows, ``chunk_rows`` per transaction.

        ``max_result_id``: only results up to it (the last one archived).
        ``on_chunk`` runs after each committed chunk (progress, heartbeats).
        """
        n = self.chunk_rows
        results = select(BatchResult.id).where(BatchResult.batch_id == batch_id)
        if max_result_id is not None:
            results = results.where(BatchResult.id <= max_result_id)
        line_errors = select(
            ResultLineError.batch_id, ResultLineError.file_id, ResultLineError.line_number
        ).where(ResultLineError.batch_id == batch_id)
        events = select(BatchEvent.id).where(
            BatchEvent.batch_id == batch_id, BatchEvent.recorded_at < cutoff
        )
        # the whole key: another batch may name the same file (its own line errors)
        key = tuple_(ResultLineError.batch_id, ResultLineError.file_id, ResultLineError.line_number)
        found = PruneCounts(batches=1)
        found.results = self._drain(
            lambda: delete(BatchResult).where(BatchResult.id.in_(results.limit(n))),
            on_chunk,
            mark=batch_id,
        )
        found.line_errors = self._drain(
            lambda: delete(ResultLineError).where(key.in_(line_errors.limit(n))),
            on_chunk,
            mark=None if found.results else batch_id,
        )
        found.events = self._drain(
            lambda: delete(BatchEvent).where(BatchEvent.id.in_(events.limit(n))), on_chunk
        )
        return found

    def _drain(
        self,
        statement: Callable[[], Delete],
        on_chunk: Callable[[], None],
        *,
        mark: str | None = None,
    ) -> int:
        """Run ``statement`` until it removes fewer than ``chunk_rows``; how many went.

        ``mark``: a batch whose ``results_pruned_at`` is set in the transaction of the
        first chunk that removes rows. A prune interrupted later (its next chunk, the
        events, the next batch) must still leave the marker: the next prune finds no
        row left to remove, and without it ``orchestrator results`` would export 0 rows
        of a ``done`` harvest and say nothing.
        """
        total = 0
        while True:
            with self.db.transaction() as session:
                gone = int(
                    session.execute(
                        statement().execution_options(synchronize_session=False)
                    ).rowcount  # type: ignore[attr-defined]
                )
                if gone and not total and mark is not None:
                    session.execute(
                        update(Batch)
                        .where(Batch.id == mark)
                        .values(results_pruned_at=server_now(session))
                        .execution_options(synchronize_session=False)
                    )
            total += gone
            if gone:
                on_chunk()
            if gone < self.chunk_rows:
                return total
