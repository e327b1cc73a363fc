"""Bulk cancel: choose batches from the table with filters, show the plan, confirm, request.

`orchestrator cancel` with any selection flag (or --dry-run) comes here. Named
ids are requested exactly as a plain `cancel ID` would request them; batches
chosen by the filters are skipped when they have already ended or a cancel is
already under way. Filters can reach many batches, so they need a yes: typed at
a terminal, or --yes. Without a terminal and without --yes nothing is requested.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime

from rich.console import Console
from rich.table import Table

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.ids_input import IdList, collect_ids, report_rejected
from orchestrator.cli.render import age, cell
from orchestrator.clock import utcnow
from orchestrator.core.apply import StoredBatch
from orchestrator.core.cancel_request import CancelState, Move, RequestPlan, Wish, open_request
from orchestrator.core.status import parse_status
from orchestrator.db.cancels import CancelStore, RequestSummary
from orchestrator.db.queries import BatchFilter, BatchSummary, OperatorQueries
from orchestrator.db.server_clock import database_clock

SHOWN_ROWS = 100  # of each list, in the human plan; --json has them all


def selection(args: argparse.Namespace, now: datetime) -> BatchFilter | None:
    """The filter the flags describe; None when no selection flag was given."""
    where = BatchFilter(
        statuses=tuple(args.status),
        created_before=now - args.older_than if args.older_than is not None else None,
        metadata=tuple(args.metadata),
        endpoint=args.endpoint,
        model=args.model,
    )
    return None if where.is_empty else where


def wanted(args: argparse.Namespace) -> bool:
    return args.dry_run or selection(args, utcnow()) is not None


def describe(args: argparse.Namespace) -> str:
    parts = [f"--status {s}" for s in args.status]
    if args.older_than is not None:
        parts.append(f"--older-than {age(args.older_than.total_seconds())}")
    parts += [f"--metadata {k}={v}" for k, v in args.metadata]
    if args.endpoint:
        parts.append(f"--endpoint {args.endpoint}")
    if args.model:
        parts.append(f"--model {args.model}")
    return " ".join(parts)


@dataclass(frozen=True)
class Planned:
    batch_id: str
    status: str | None  # None: not tracked yet, or never observed
    chosen_by: str  # "id" (named) or "filter"
    note: str
    seconds_in_status: float | None = None


@dataclass
class CancelPlan:
    to_cancel: list[Planned] = field(default_factory=list)
    skipped: list[Planned] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "to_cancel": [asdict(p) for p in self.to_cancel],
            "skipped": [asdict(p) for p in self.skipped],
        }


def _request(row: BatchSummary, now: datetime) -> RequestPlan:
    """What `CancelStore.request` would do to this batch's request now: the same rule."""
    state = CancelState(row.cancel_state) if row.cancel_state else None
    batch = StoredBatch(status=parse_status(row.status) if row.status else None)
    return open_request(state, batch, Wish("dry run", None), now)


def _note(row: BatchSummary, plan: RequestPlan) -> str:
    if not plan.moves:
        return f"cancel already requested ({row.cancel_state})"
    if Move.CLOSE in plan.moves:
        return f"already {row.status}: the request closes at once as too late"
    return f"reopens a {row.cancel_state} request" if Move.REOPEN in plan.moves else ""


def _named(batch_id: str, row: BatchSummary | None, now: datetime) -> tuple[bool, Planned]:
    """(requested?, how) for an id given by name: what a plain `cancel ID` does."""
    if row is None:
        return True, Planned(batch_id, None, "id", "not tracked yet")
    plan = _request(row, now)
    note = _note(row, plan)
    return bool(plan.moves), Planned(batch_id, row.status, "id", note, row.seconds_in_status(now))


def _selected(row: BatchSummary, now: datetime) -> tuple[bool, Planned]:
    seconds = row.seconds_in_status(now)
    if row.is_terminal:  # filters never choose a batch that has ended
        return False, Planned(row.id, row.status, "filter", f"already {row.status}", seconds)
    plan = _request(row, now)
    return bool(plan.moves), Planned(row.id, row.status, "filter", _note(row, plan), seconds)


def make_plan(
    queries: OperatorQueries, named: list[str], where: BatchFilter | None, now: datetime
) -> CancelPlan:
    plan = CancelPlan()
    known = queries.summaries(named)
    decisions = [_named(batch_id, known.get(batch_id), now) for batch_id in named]
    if where is not None:
        given = set(named)
        decisions += [_selected(r, now) for r in queries.select_batches(where) if r.id not in given]
    for go, planned in decisions:
        (plan.to_cancel if go else plan.skipped).append(planned)
    return plan


# --- the command ------------------------------------------------------------------------


def run(ctx: Context) -> Exit:
    args = ctx.args
    ids = collect_ids(args.ids, args.from_file)
    report_rejected(ctx, ids)
    now = utcnow()
    where = selection(args, now)
    if where is None and not ids.valid:
        ctx.err.print("no valid batch id given, and no filter to choose batches with")
        return Exit.USAGE
    db = ctx.database()
    try:
        plan = make_plan(OperatorQueries(db), ids.valid, where, now)
        if args.dry_run or not plan.to_cancel:
            _show_plan(ctx, plan, ids, dry_run=args.dry_run)
            return _exit(ids)
        if where is not None and not args.yes:
            # stdout stays one JSON document with --json: the plan to confirm goes to stderr
            _show_plan(ctx, plan, ids, dry_run=False, console=ctx.err if ctx.json else ctx.out)
            refused = _refusal(ctx, len(plan.to_cancel))
            if refused is not None:
                return refused
        reason = args.reason
        if where is not None:
            chosen = f"chosen by {describe(args)}"
            reason = f"{reason} ({chosen})" if reason else chosen
        summary = CancelStore(db).request(
            [p.batch_id for p in plan.to_cancel],
            now=database_clock(db).now(),
            requested_by=args.by or getpass.getuser(),
            reason=reason,
        )
    finally:
        db.dispose()
    _show_outcome(ctx, plan, summary, ids)
    return _exit(ids)


def _exit(ids: IdList) -> Exit:
    return Exit.ATTENTION if ids.rejected else Exit.OK


def _refusal(ctx: Context, count: int) -> Exit | None:
    """None when a person typed yes; else the exit code, nothing requested."""
    if not sys.stdin.isatty():
        ctx.err.print(
            f"refusing to cancel {count} batch(es) chosen by filters without a confirmation: "
            "stdin is not a terminal. Re-run with --yes to go ahead, or --dry-run to see "
            "the plan only.",
            markup=False,
        )
        return Exit.USAGE
    ctx.err.print(f"cancel these {count} batch(es)? type yes to go on: ", end="")
    answer = sys.stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return None
    ctx.err.print("not confirmed: nothing was requested")
    return Exit.ATTENTION


def _table(title: str, rows: list[Planned]) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("batch", "status", "in status", "chosen by", "note"):
        table.add_column(column, overflow="fold")
    for p in rows[:SHOWN_ROWS]:
        table.add_row(
            cell(p.batch_id),
            cell(p.status or "unknown"),
            age(p.seconds_in_status) if p.seconds_in_status is not None else "-",
            p.chosen_by,
            cell(p.note),
        )
    if len(rows) > SHOWN_ROWS:
        table.add_row(f"... {len(rows) - SHOWN_ROWS} more (--json lists all)", "", "", "", "")
    return table


def _show_plan(
    ctx: Context, plan: CancelPlan, ids: IdList, *, dry_run: bool, console: Console | None = None
) -> None:
    """The plan as JSON (on stdout, with --json and no console named), else as tables."""
    if console is None:
        if ctx.json:
            ctx.emit_json({"dry_run": dry_run, **plan.to_dict(), "rejected": ids.rejected})
            return
        console = ctx.out
    if plan.to_cancel:
        console.print(_table(f"to cancel ({len(plan.to_cancel)})", plan.to_cancel))
    if plan.skipped:
        console.print(_table(f"skipped ({len(plan.skipped)})", plan.skipped))
    line = f"plan: cancel {len(plan.to_cancel)} batch(es), skip {len(plan.skipped)}"
    if not plan.to_cancel:
        line += "; nothing to cancel"
    elif dry_run:
        line += "; dry run: nothing was requested"
    console.print(line)


def _show_outcome(ctx: Context, plan: CancelPlan, summary: RequestSummary, ids: IdList) -> None:
    if ctx.json:
        ctx.emit_json(
            {
                "dry_run": False,
                **plan.to_dict(),
                "requested": summary.new,
                "already_requested": summary.already,
                "reopened": summary.reopened,
                "closed_at_once": summary.closed_at_once,
                "rejected": ids.rejected,
            }
        )
        return
    if plan.skipped:
        ctx.out.print(_table(f"skipped ({len(plan.skipped)})", plan.skipped))
    ctx.out.print(
        f"cancel requested for {len(summary.new)} batch(es)"
        + (f", {len(summary.reopened)} reopened" if summary.reopened else "")
        + (f", {len(summary.already)} already requested" if summary.already else "")
        + (f", {len(plan.skipped)} skipped" if plan.skipped else "")
    )
    for batch_id, outcome in summary.closed_at_once.items():
        ctx.out.print(f"  {batch_id}: already ended ({cell(outcome)}); results will be harvested")
    ctx.out.print("run `orchestrator worker` to send them (or check `orchestrator status`)")
