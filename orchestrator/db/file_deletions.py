"""The ``file_deletions`` table: which API files to delete, and how each deletion went.

A file is queued only when ``core.cleanup.deletable`` says the harvest of
every batch naming it is verified, and checked again by the same rule when it is claimed, in the
transaction that claims it: nothing between the two can make us delete a file
whose lines we do not hold. Times are the database's (``server_now``): a due
time set by one host is read by another. A claim moves ``next_attempt_at`` a
lease ahead, so two processes never send one deletion at once, and a process
that dies mid-call leaves a row that is simply due again later.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from orchestrator.core.cleanup import (
    FOUND_BY,
    BatchFiles,
    DeletionState,
    FileKind,
    StoredFile,
    deletable,
)
from orchestrator.core.harvest import HarvestState
from orchestrator.core.status import TERMINAL
from orchestrator.db.database import Database, chunks
from orchestrator.db.models import Batch, FileDeletion, ResultFile, table_of
from orchestrator.db.server_time import server_now

__all__ = ["Deletion", "DeletionResult", "FileDeletionStore"]

_ERROR_CHARS = 2000
CANDIDATES_PAGE = 500  # rows of candidates (or due deletions) read at a time
# A queued deletion the rule holds back now (a sharer still running) is looked at again
# this much later, not at every claim.
RECHECK_SECONDS = 600.0


@dataclass(frozen=True)
class Deletion:
    """A file to delete: queued, or (from ``preview``) about to be."""

    batch_id: str
    kind: FileKind
    file_id: str
    attempts: int = 0


@dataclass(frozen=True, kw_only=True)
class DeletionResult:
    """What one DELETE came to; ``retry_in`` set means: pending, due again then."""

    state: DeletionState
    outcome: str | None = None
    http_status: int | None = None
    request_id: str | None = None
    error: str | None = None
    retry_in: float | None = None
    # False: the shared request budget held the DELETE back and nothing left the host;
    # the attempt counted when it was claimed is given back (it would lengthen the backoff)
    went_out: bool = True


def _batch_files(row: Batch) -> BatchFiles:
    return BatchFiles(
        batch_id=row.id,
        status=row.status,
        harvest_state=row.harvest_state,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        input_file_id=row.input_file_id,
        found=row.tracked_by in FOUND_BY,
    )


class FileDeletionStore:
    def __init__(self, db: Database, *, result_files: bool, input_files: bool) -> None:
        self.db = db
        self.result_files = result_files
        self.input_files = input_files

    # --- the rule, applied to what the database holds ---------------------------------

    def _allowed(self, session: Session, batch_ids: Iterable[str]) -> set[tuple[str, str]]:
        """(batch id, file id) of every file of these batches the rule lets go now."""
        batches = {
            row.id: _batch_files(row)
            for ids in chunks(sorted(set(batch_ids)))
            for row in session.scalars(select(Batch).where(Batch.id.in_(ids)))
        }
        # Every tracked batch naming one of these files, in any role: a shared file
        # waits for all of them.
        sharers: dict[str, list[BatchFiles]] = {}
        named = sorted({f for b in batches.values() for f in b.file_ids()})
        seen: set[str] = set()
        columns = (Batch.input_file_id, Batch.output_file_id, Batch.error_file_id)
        for column, ids in ((c, ids) for c in columns for ids in chunks(named)):
            for row in session.scalars(select(Batch).where(column.in_(ids))):
                if row.id in seen:
                    continue
                seen.add(row.id)
                user = _batch_files(row)
                for file_id in user.file_ids():
                    sharers.setdefault(file_id, []).append(user)
        stored = {
            (f.batch_id, f.file_id): StoredFile(
                f.state, f.lines, f.sha256, f.lines_committed, f.end_checked
            )
            for ids in chunks(sorted(seen | set(batches)))
            for f in session.scalars(select(ResultFile).where(ResultFile.batch_id.in_(ids)))
        }
        inputs_unknown = self.input_files and _inputs_unknown(session)
        allowed: set[tuple[str, str]] = set()
        for batch in batches.values():
            files = deletable(
                batch,
                stored,
                result_files=self.result_files,
                input_file=self.input_files,
                sharers=sharers,
                inputs_unknown=inputs_unknown,
            )
            allowed.update((batch.batch_id, file_id) for _, file_id in files)
        return allowed

    def _unqueued(self, session: Session, limit: int) -> list[Deletion]:
        """Files of harvested batches with no ``file_deletions`` row yet, rule applied,
        oldest harvest first. The candidates are read a page at a time until ``limit``
        are allowed: files the rule keeps for good (a sharer whose harvest is missing)
        must not fill a window that newer files the rule lets go never reach."""
        columns = []
        if self.result_files:
            columns += [
                (FileKind.OUTPUT, Batch.output_file_id),
                (FileKind.ERROR, Batch.error_file_id),
            ]
        if self.input_files:
            columns.append((FileKind.INPUT, Batch.input_file_id))
        found: dict[str, Deletion] = {}
        for kind, column in columns:
            for page in _candidates(session, kind, column, max(limit, CANDIDATES_PAGE)):
                allowed = self._allowed(session, {d.batch_id for d in page})
                for deletion in page:
                    if (deletion.batch_id, deletion.file_id) in allowed:
                        found.setdefault(deletion.file_id, deletion)
                if len(found) >= limit:
                    break
        return list(found.values())[:limit]

    # --- planning ---------------------------------------------------------------------

    def preview(self, *, limit: int) -> list[Deletion]:
        """What would go now: queued deletions that are pending, then files not queued yet."""
        with self.db.transaction() as session:
            pending = [
                Deletion(r.batch_id, FileKind(r.kind), r.file_id, r.attempts)
                for r in session.scalars(
                    select(FileDeletion)
                    .where(FileDeletion.state == DeletionState.PENDING.value)
                    .order_by(FileDeletion.next_attempt_at, FileDeletion.file_id)
                    .limit(limit)
                )
            ]
            allowed = self._allowed(session, {d.batch_id for d in pending})
            pending = [d for d in pending if (d.batch_id, d.file_id) in allowed]
            return pending + self._unqueued(session, max(limit - len(pending), 0))

    def enqueue(self, *, limit: int) -> int:
        """Queue the files that may go now (each once); returns how many were queued."""
        with self.db.transaction() as session:
            found = self._unqueued(session, limit)
            if not found:
                return 0
            now = server_now(session)
            rows = [
                {
                    "file_id": d.file_id,
                    "batch_id": d.batch_id,
                    "kind": d.kind.value,
                    "state": DeletionState.PENDING.value,
                    "attempts": 0,
                    "requested_at": now,
                    "next_attempt_at": now,
                }
                for d in found
            ]
            session.execute(self.db.insert_ignoring_conflicts(table_of(FileDeletion)), rows)
            return len(rows)

    # --- sending ----------------------------------------------------------------------

    def claim_due(self, *, limit: int, lease_seconds: float) -> list[Deletion]:
        """Lease up to ``limit`` due deletions whose files the rule lets go now, to be
        sent at once: the rule is checked here, in the claim's transaction, and the
        claim commits durably (``durable_transaction``: the harvest that makes the
        deletion safe is on the disk before the file can go). A due deletion the rule
        holds back now is due again in ``RECHECK_SECONDS``, so that those never fill
        the page the claim reads while ones it lets go wait behind them."""
        claimed: list[FileDeletion] = []
        with self.db.durable_transaction() as session:
            now = server_now(session)
            while len(claimed) < limit:
                rows = list(
                    session.scalars(
                        select(FileDeletion)
                        .where(
                            FileDeletion.state == DeletionState.PENDING.value,
                            FileDeletion.next_attempt_at <= now,
                        )
                        .order_by(FileDeletion.next_attempt_at, FileDeletion.file_id)
                        .limit(CANDIDATES_PAGE)
                        .with_for_update(skip_locked=True)
                    )
                )
                if not rows:
                    break
                allowed = self._allowed(session, {r.batch_id for r in rows})
                held = [r.file_id for r in rows if (r.batch_id, r.file_id) not in allowed]
                taken = [r for r in rows if (r.batch_id, r.file_id) in allowed]
                claimed += taken[: limit - len(claimed)]
                self._due_again(session, held, now + timedelta(seconds=RECHECK_SECONDS))
            if not claimed:
                return []
            session.execute(
                update(FileDeletion)
                .where(FileDeletion.file_id.in_([r.file_id for r in claimed]))
                .values(
                    attempts=FileDeletion.attempts + 1,
                    last_attempt_at=now,
                    next_attempt_at=now + timedelta(seconds=lease_seconds),
                )
                .execution_options(synchronize_session=False)
            )
            return [
                Deletion(r.batch_id, FileKind(r.kind), r.file_id, r.attempts + 1) for r in claimed
            ]

    @staticmethod
    def _due_again(session: Session, file_ids: list[str], at: datetime) -> None:
        for ids in chunks(file_ids):
            session.execute(
                update(FileDeletion)
                .where(FileDeletion.file_id.in_(ids))
                .values(next_attempt_at=at)
                .execution_options(synchronize_session=False)
            )

    def record(self, file_id: str, result: DeletionResult) -> None:
        with self.db.transaction() as session:
            now = server_now(session)
            values: dict[str, object] = {
                "state": result.state.value,
                "outcome": result.outcome,
                "last_http_status": result.http_status,
                "last_request_id": result.request_id,
                "last_error": result.error[:_ERROR_CHARS] if result.error else None,
            }
            if not result.went_out:
                values["attempts"] = FileDeletion.attempts - 1
            if result.state is DeletionState.PENDING:
                values["next_attempt_at"] = now + timedelta(seconds=result.retry_in or 0.0)
            else:
                values["next_attempt_at"] = None
                values["done_at"] = now
            session.execute(
                update(FileDeletion)
                .where(
                    FileDeletion.file_id == file_id,
                    FileDeletion.state == DeletionState.PENDING.value,
                )
                .values(values)
                .execution_options(synchronize_session=False)
            )


def _candidates(
    session: Session, kind: FileKind, column: InstrumentedAttribute[str | None], size: int
) -> Iterator[list[Deletion]]:
    """The files in ``column`` of harvested batches not queued yet, ``size`` rows at a
    time (the rows do not move meanwhile: nothing is queued until the caller is done)."""
    queued = select(FileDeletion.file_id).where(FileDeletion.file_id == column)
    query = (
        select(Batch.id, column)
        .where(
            Batch.harvest_state == HarvestState.DONE.value,
            column.is_not(None),
            column != "",
            ~queued.exists(),
        )
        .order_by(Batch.harvested_at, Batch.id)
        .limit(size)
    )
    offset = 0
    while rows := session.execute(query.offset(offset)).all():
        yield [Deletion(batch_id, kind, file_id) for batch_id, file_id in rows if file_id]
        offset += len(rows)


def _inputs_unknown(session: Session) -> bool:
    """Is some tracked batch that may still be running without an input file id (tracked
    but not observed yet, or observed without one)?"""
    running = Batch.status.is_(None) | Batch.status.not_in([s.value for s in TERMINAL])
    unknown = select(Batch.id).where(Batch.input_file_id.is_(None), running).limit(1)
    return session.scalar(unknown) is not None
