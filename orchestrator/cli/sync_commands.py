"""`orchestrator sync`: record every batch the API lists, so batches made elsewhere can be
seen (`status`) and selected (`cancel --status ...`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from orchestrator.api.client import BatchApiClient
from orchestrator.api.pages import pages
from orchestrator.cli.context import Context, Exit
from orchestrator.cli.wiring import build_client
from orchestrator.core.apply import Applied
from orchestrator.core.ids import validate_batch_id
from orchestrator.core.observation import USAGE_FIELDS, MalformedBatch, parse_batch
from orchestrator.core.status import TIMESTAMP_FIELDS
from orchestrator.core.visible import visible
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from orchestrator.db.queries import OperatorQueries
from orchestrator.db.server_clock import database_clock
from orchestrator.errors import InvalidBatchId

log = logging.getLogger(__name__)
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


def _mirrored(row: Batch) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in API_FIELDS)


class BatchSync:
    """Records listed batches one observation (one transaction) at a time."""

    def __init__(self, db: Database, *, harvest_finished: bool) -> None:
        self.store = BatchStore(db)
        self.queries = OperatorQueries(db)
        self.harvest_finished = harvest_finished
        self.clock = database_clock(db)  # next_poll_at is compared across hosts

    def record_page(self, items: list[dict[str, Any]], now: datetime, report: SyncReport) -> None:
        ids = [item["id"] for item in items if _valid_id(item.get("id"))]
        before = {row.id: _mirrored(row) for row in self.queries.batches(ids).values()}
        for item in items:
            report.seen += 1
            try:
                observed = parse_batch(item)
            except (MalformedBatch, InvalidBatchId) as exc:
                shown = item.get("id") if _valid_id(item.get("id")) else "(id refused)"
                report.malformed.append(f"{shown}: {exc}")
                continue
            was = before.get(observed.id)
            after: list[tuple[Any, ...]] = []

            def follow_up(
                applied: Applied,
                row: Batch,
                is_new: bool = was is None,
                after: list[tuple[Any, ...]] = after,
            ) -> dict[str, Any]:
                after.append(_mirrored(row))
                ended = applied.status is not None and applied.status.is_terminal
                if is_new and ended and not self.harvest_finished:
                    report.new_finished_not_followed += 1
                    return {"next_poll_at": None}  # nothing for the reconciler to do
                return {}

            self.store.record_observation(observed, now=now, source=SOURCE, follow_up=follow_up)
            if after:  # a page listing a batch twice: the second is no longer new
                before[observed.id] = after[0]
            if was is None:
                report.new += 1
            elif after and after[0] != was:
                report.updated += 1
            else:
                report.unchanged += 1


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


def run_sync(ctx: Context) -> Exit:
    client = build_client(ctx.settings)
    db = ctx.database()
    syncer = BatchSync(db, harvest_finished=ctx.args.harvest_finished)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=ctx.err,
        transient=True,
    )
    try:
        with progress:
            report = sync_batches(
                client,
                syncer,
                page_size=ctx.args.page_size,
                limit_pages=ctx.args.limit_pages,
                progress=progress,
            )
    finally:
        client.close()
        db.dispose()
    print_report(ctx, report)
    return Exit.ATTENTION if report.malformed else Exit.OK


def print_report(ctx: Context, report: SyncReport) -> None:
    if ctx.json:
        ctx.emit_json(vars(report))
        return
    ctx.out.print(
        f"synced {report.seen} batch(es) from {report.pages} page(s): {report.new} new, "
        f"{report.updated} updated, {report.unchanged} unchanged"
    )
    if report.new_finished_not_followed:
        ctx.out.print(
            f"{report.new_finished_not_followed} new batch(es) had already ended: recorded, "
            "not harvested (--harvest-finished to download their results)"
        )
    if report.stopped_at_page_limit:
        ctx.out.print("stopped at --limit-pages: older batches were not listed")
    for problem in report.malformed:
        ctx.err.print(f"skipped a malformed batch: {visible(problem)}", markup=False)
