"""`orchestrator sync`: record every batch the API lists (the service: processes/sync.py)."""

from __future__ import annotations

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.wiring import build_client
from orchestrator.core.visible import visible
from orchestrator.processes.sync import BatchSync, SyncReport, sync_batches


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
    if report.known_finished_to_harvest:
        ctx.out.print(
            f"{report.known_finished_to_harvest} batch(es) recorded earlier had ended and were "
            "never harvested: `orchestrator reconcile` harvests them now"
        )
    if report.stopped_at_page_limit:
        ctx.out.print("stopped at --limit-pages: older batches were not listed")
    for problem in report.malformed:
        ctx.err.print(f"skipped a malformed batch: {visible(problem)}", markup=False)
