"""`orchestrator forget`: drop batches tracked by mistake, after a plan and a yes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.table import Table

from orchestrator.cli.batch_names import named_ids
from orchestrator.cli.confirm import refusal
from orchestrator.cli.context import Context, Exit
from orchestrator.cli.ids_input import IdList, ids_and_selector
from orchestrator.cli.output import emit, for_a_person, record
from orchestrator.cli.render import age, cell
from orchestrator.cli.selection import NEVER_SYNCED, Selector
from orchestrator.cli.who import os_user
from orchestrator.core.status import UNOBSERVED
from orchestrator.db.corrections import CorrectionStore, ForgetSummary
from orchestrator.db.database import Database
from orchestrator.db.queries import BatchSummary, OperatorQueries
from orchestrator.db.server_clock import database_clock

PLAN_COLUMNS = ("batch", "status", "age", "cancel", "answers", "errors", "tracked by")


def _plan_record(row: BatchSummary, now: datetime) -> dict[str, Any]:
    return {
        "batch_id": row.id,
        "status": row.status or UNOBSERVED,
        "age_seconds": round(row.seconds_since_created(now), 3),
        "cancel_state": row.cancel_state,
        "cancel_outcome": row.cancel_outcome,
        "answers": row.answers,
        "errors": row.errors,
    }


def _plan_table(rows: list[BatchSummary], now: datetime) -> Table:
    table = Table(title=f"to forget ({len(rows)})", title_justify="left", box=None, pad_edge=False)
    for column in PLAN_COLUMNS[:-1]:
        table.add_column(column, overflow="fold")
    for row in rows:
        cancel = row.cancel_state or ""
        if row.cancel_outcome:
            cancel = f"{cancel}: {row.cancel_outcome}"
        table.add_row(
            cell(row.id),
            cell(row.status or UNOBSERVED),
            age(row.seconds_since_created(now)),
            cell(cancel),
            str(row.answers),
            str(row.errors),
        )
    return table


def _chosen(
    ctx: Context, db: Database, given: IdList, selector: Selector
) -> tuple[list[BatchSummary], IdList, datetime]:
    """The tracked batches named (beginnings resolved) and chosen by the selector."""
    ids = named_ids(ctx, db, given, new_allowed=False)
    queries = OperatorQueries(db)
    now = database_clock(db).now()
    picked = list(ids.valid)
    if not selector.is_empty:
        selected = queries.select_batches(selector.batch_filter(now))
        if not selected and queries.last_synced() is None:
            ctx.err.print(NEVER_SYNCED, markup=False)
        picked += [r.id for r in selected]
    found = queries.summaries(picked)
    return [found[i] for i in dict.fromkeys(picked) if i in found], ids, now


def run_forget(ctx: Context) -> Exit:
    args = ctx.args
    chosen = ids_and_selector(ctx)
    if chosen is None:
        return Exit.USAGE
    db = ctx.database()
    try:
        rows, ids, now = _chosen(ctx, db, *chosen)
        if args.dry_run or not rows:
            _show_plan(ctx, rows, now, dry_run=args.dry_run)
            # nothing to forget, and a name no tracked batch has (named_ids refused it):
            # exit 4, as `show` of an unknown batch
            if not rows and len(ids.rejected) > len(chosen[0].rejected):
                return Exit.NOT_FOUND
            return Exit.ATTENTION if ids.rejected else Exit.OK
        if not args.yes:
            _show_plan(ctx, rows, now, dry_run=False, to_stderr=not for_a_person(ctx))
            refused = refusal(ctx, "forget", len(rows))
            if refused is not None:
                return refused
        summary = CorrectionStore(db).forget(
            [r.id for r in rows], now=now, by=args.by or os_user(), reason=args.reason
        )
    finally:
        db.dispose()
    _show_outcome(ctx, summary, ids.rejected)
    return Exit.ATTENTION if ids.rejected or summary.in_use else Exit.OK


def _show_plan(
    ctx: Context, rows: list[BatchSummary], now: datetime, *, dry_run: bool, to_stderr: bool = False
) -> None:
    if not to_stderr:
        planned = [_plan_record(r, now) for r in rows]
        records = [{**p, "result": "to_forget"} for p in planned]
        if emit(ctx, {"dry_run": dry_run, "to_forget": planned}, records):
            return
    console = ctx.err if to_stderr else ctx.out
    if rows:
        console.print(_plan_table(rows, now))
        answers = sum(r.answers for r in rows)
        if answers:
            console.print(
                f"note: this drops {answers} stored answer(s); `orchestrator results` "
                "exports them first",
                markup=False,
            )
    line = f"plan: forget {len(rows)} batch(es)"
    line += "; dry run: nothing was dropped" if dry_run and rows else ""
    line += "; nothing to forget" if not rows else ""
    console.print(line, markup=False)


def _show_outcome(ctx: Context, summary: ForgetSummary, rejected: list[str]) -> None:
    document = {
        "forgotten": summary.forgotten,
        "in_use": summary.in_use,
        "gone_already": summary.unknown,
        "rejected": rejected,
    }
    records = [record(i, "forgotten") for i in summary.forgotten]
    records += [record(i, "in_use", listed=False) for i in summary.in_use]
    records += [record(i, "gone_already", listed=False) for i in summary.unknown]
    if emit(ctx, document, records):
        return
    ctx.out.print(
        f"forgot {len(summary.forgotten)} batch(es) (recorded in forgotten_batches)",
        markup=False,
    )
    for batch_id in summary.in_use:
        ctx.out.print(
            f"  {batch_id}: left alone, a worker or reconciler is on it; try again in a minute",
            markup=False,
        )
