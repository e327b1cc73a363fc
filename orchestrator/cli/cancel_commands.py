"""`orchestrator cancel` and `orchestrator track`: record intent, return at once."""

from __future__ import annotations

from orchestrator.cli import cancel_plan
from orchestrator.cli.batch_names import named_ids
from orchestrator.cli.context import Context, Exit
from orchestrator.cli.ids_input import IdList, collect_ids, report_rejected
from orchestrator.cli.output import emit, record
from orchestrator.cli.render import cell
from orchestrator.cli.who import os_user
from orchestrator.cli.withdraw_command import run_withdraw
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.corrections import CorrectionStore
from orchestrator.db.server_clock import database_clock


def _exit(ids: IdList) -> Exit:
    if ids.rejected:
        return Exit.ATTENTION if ids.valid else Exit.USAGE
    return Exit.OK


def run_cancel(ctx: Context) -> Exit:
    if ctx.args.withdraw:
        return run_withdraw(ctx)
    if cancel_plan.wanted(ctx.args):  # filters or --dry-run: plan, confirm, then request
        return cancel_plan.run(ctx)
    given = collect_ids(ctx.args.ids, ctx.args.from_file)
    report_rejected(ctx, given)
    if not given.valid:
        ctx.err.print("no valid batch id given")
        return Exit.USAGE
    db = ctx.database()
    try:
        ids = named_ids(ctx, db, given)
        if not ids.valid:
            return Exit.USAGE
        summary = CancelStore(db).request(
            ids.valid,
            now=database_clock(db).now(),
            requested_by=ctx.args.by or os_user(),
            reason=ctx.args.reason,
        )
    finally:
        db.dispose()
    document = {
        "requested": summary.new,
        "already_requested": summary.already,
        "reopened": summary.reopened,
        "closed_at_once": summary.closed_at_once,
        "rejected": ids.rejected,
    }
    if not emit(ctx, document, cancel_plan.request_records(summary)):
        ctx.out.print(
            f"cancel requested for {len(summary.new)} batch(es)"
            + (f", {len(summary.reopened)} reopened" if summary.reopened else "")
            + (f", {len(summary.already)} already requested" if summary.already else "")
        )
        for batch_id, outcome in summary.closed_at_once.items():
            ctx.out.print(
                f"  {batch_id}: already ended ({cell(outcome)}); results will be harvested"
            )
        ctx.out.print("run `orchestrator worker` to send them (or check `orchestrator status`)")
    return _exit(ids)


def run_track(ctx: Context) -> Exit:
    given = collect_ids(ctx.args.ids, ctx.args.from_file)
    report_rejected(ctx, given)
    if not given.valid:
        ctx.err.print("no valid batch id given")
        return Exit.USAGE
    db = ctx.database()
    try:
        ids = named_ids(ctx, db, given)
        if not ids.valid:
            return Exit.USAGE
        now = database_clock(db).now()
        new = BatchStore(db).track(ids.valid, now=now, source="track")
        # A batch that ended before anyone followed it (`sync` records those without
        # harvesting them): tracking it is asking for its results.
        harvest = CorrectionStore(db).harvest_unharvested(ids.valid, now=now, source="track")
    finally:
        db.dispose()
    document = {
        "tracked": new,
        "already_tracked": [i for i in ids.valid if i not in new],
        "to_harvest": harvest,
        "rejected": ids.rejected,
    }
    records = [
        record(i, "tracked" if i in new else "already_tracked", to_harvest=i in harvest)
        for i in ids.valid
    ]
    if not emit(ctx, document, records):
        ctx.out.print(
            f"tracking {len(new)} new batch(es), {len(ids.valid) - len(new)} already known"
        )
        if harvest:
            ctx.out.print(
                f"{len(harvest)} of them ended and were never harvested: "
                "`orchestrator reconcile` harvests them now"
            )
    return _exit(ids)
