"""Batch sync: record every batch the API lists, so batches made elsewhere can be seen
(``status``) and selected (``cancel --status ...``). Run by ``orchestrator sync``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rich.progress import Progress

from orchestrator.api.client import BatchApiClient
from orchestrator.api.pages import pages
from orchestrator.core.ids import validate_batch_id
from orchestrator.core.observation import USAGE_FIELDS, MalformedBatch, parse_batch
from orchestrator.core.status import TIMESTAMP_FIELDS
from orchestrator.db.batches import BatchStore
from orchestrator.db.corrections import CorrectionStore
from orchestrator.db.database import Database
from orchestrator.db.server_clock import database_clock
from orchestrator.errors import InvalidBatchId

__all__ = ["API_FIELDS", "BatchSync", "SyncReport", "sync_batches"]

SOURCE = "sync"


@dataclass
class SyncReport:
    seen: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    pages: int = 0
    stopped_at_page_limit: bool = False
    malformed: list[str] = field(default_factory=list)
    new_finished_not_followed: int = 0
    known_finished_to_harvest: int = 0  # --harvest-finished: recorded earlier, made due now


# The columns that mirror the server's Batch object: a change in any is an update.
API_FIELDS = (
    "status",
    *TIMESTAMP_FIELDS,
    "output_file_id",
    "error_file_id",
    "request_counts_total",
    "request_counts_completed",
    "request_counts_failed",
    *USAGE_FIELDS,
    "metadata_",
    "errors",
    "endpoint",
    "model",
    "input_file_id",
    "completion_window",
)


class BatchSync:
    """Records listed batches one observation (one transaction) at a time."""

    def __init__(self, db: Database, *, harvest_finished: bool) -> None:
        # harvest_finished: follow (poll, then harvest) a batch already ended too, new or
        # recorded (not followed) by an earlier sync
        self.store = BatchStore(db)
        self.corrections = CorrectionStore(db)
        self.harvest_finished = harvest_finished
        self.clock = database_clock(db)  # next_poll_at is compared across hosts

    def record_page(
        self, items: list[dict[str, object]], now: datetime, report: SyncReport
    ) -> None:
        recorded_ids: list[str] = []
        for item in items:
            report.seen += 1
            try:
                observed = parse_batch(item)
            except (MalformedBatch, InvalidBatchId) as exc:
                shown = item.get("id") if _valid_id(item.get("id")) else "(id refused)"
                report.malformed.append(f"{shown}: {exc}")
                continue
            # New or not is decided in the batch's own transaction (did it insert the
            # row?): a batch another host tracks meanwhile keeps the polls it was given.
            recorded = self.store.record_observation(
                observed, now=now, source=SOURCE, follow_new_if_ended=self.harvest_finished
            )
            recorded_ids.append(observed.id)
            if recorded.polling_stopped:
                report.new_finished_not_followed += 1
            if recorded.inserted:
                report.new += 1
            elif not recorded.changed.isdisjoint(API_FIELDS):
                report.updated += 1
            else:
                report.unchanged += 1
        if self.harvest_finished and recorded_ids:
            # A finished batch an earlier plain sync recorded is not followed: make it due
            # as `track` does (the same rule; one statement per page).
            due = self.corrections.harvest_unharvested(recorded_ids, now=now, source=SOURCE)
            report.known_finished_to_harvest += len(due)


def _valid_id(value: object) -> bool:
    try:
        validate_batch_id(value)
    except InvalidBatchId:
        return False
    return True


def sync_batches(
    client: BatchApiClient,
    syncer: BatchSync,
    *,
    page_size: int,
    limit_pages: int | None,
    progress: Progress | None = None,
) -> SyncReport:
    report = SyncReport()
    task = progress.add_task("listing batches", total=None) if progress is not None else None
    for page in pages(client.iter_batches(limit=page_size), page_size):
        syncer.record_page(page, syncer.clock.now(), report)
        report.pages += 1
        if progress is not None and task is not None:
            progress.update(
                task,
                description=(
                    f"page {report.pages}: {report.seen} batch(es), {report.new} new, "
                    f"{report.updated} updated"
                ),
            )
        if limit_pages is not None and report.pages >= limit_pages:
            # a full last page may mean more; the client fetches a page only on demand
            report.stopped_at_page_limit = len(page) == page_size
            break
    return report
