"""Bulk cancel: choose batches from the table with filters, show the plan, confirm, request.

`orchestrator cancel` with any selection flag (or --dry-run) comes here. Named
ids are requested exactly as a plain `cancel ID` would request them; batches
chosen by the filters are skipped when they have already ended or a cancel is
already under way. Filters can reach many batches, so they need a yes: typed at
a terminal, or --yes. Without a terminal and without --yes nothing is requested.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.cli.batch_names import named_ids
from orchestrator.cli.confirm import refusal
from orchestrator.cli.context import Context, Exit
from orchestrator.cli.ids_input import IdList, ids_and_selector
from orchestrator.cli.output import emit, for_a_person, record
from orchestrator.cli.render import age, cell, moment
from orchestrator.cli.selection import selector_of
from orchestrator.cli.who import os_user
from orchestrator.core.apply import StoredBatch
from orchestrator.core.cancel_request import CancelState, Move, RequestPlan, Wish, open_request
from orchestrator.core.status import UNOBSERVED, parse_status
from orchestrator.db.cancels import CancelStore, RequestSummary
from orchestrator.db.queries import BatchFilter, BatchSummary, OperatorQueries
from orchestrator.db.server_clock import database_clock

SHOWN_ROWS = 100  # of each list, in the human plan; -o json and -o jsonl have them all


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.dry_run or not selector_of(args).is_empty)


@dataclass(frozen=True)
class Planned:
    batch_id: str
    status: str | None  # None: not tracked yet, or never observed
    chosen_by: str  # "id" (named) or "filter"
    note: str
    seconds_in_status: float | None = None
    age_seconds: float | None = None  # since the server created it, by the server's clock
    model: str | None = None
    metadata: dict[str, Any] | None = None


def _planned(row: BatchSummary, chosen_by: str, note: str, now: datetime) -> Planned:
    return Planned(
        row.id,
        row.status,
        chosen_by,
        note,
        row.seconds_in_status(now),
        row.seconds_since_created(now),
        row.model,
        row.metadata,
    )


@dataclass
class CancelPlan:
    to_cancel: list[Planned] = field(default_factory=list)
    skipped: list[Planned] = field(default_factory=list)
    # Filters choose from the local table only: how it was filled, to say so.
    chose_from_table: bool = False
    last_synced: datetime | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "to_cancel": [asdict(p) for p in self.to_cancel],
            "skipped": [asdict(p) for p in self.skipped],
            **({"last_synced": self.last_synced} if self.chose_from_table else {}),
        }

    def records(self) -> list[dict[str, Any]]:
        """One a batch, for -o jsonl; -o ids lists those to cancel."""
        chosen = [record(p.batch_id, "to_cancel", **_fields(p)) for p in self.to_cancel]
        return chosen + [
            record(p.batch_id, "skipped", listed=False, **_fields(p)) for p in self.skipped
        ]

    def table_note(self) -> str | None:
        """What a person must know about where filters looked, or None."""
        if not self.chose_from_table:
            return None
        if self.last_synced is None:
            return (
                "chosen from the local table, which has never been synced: it holds only "
                "batches named to `cancel` or `track`. Run `orchestrator sync` to record "
                "every batch the API lists, then select again."
            )
        return (
            f"chosen from the local table (last synced {moment(self.last_synced)}; "
            "`orchestrator sync` records batches made since)"
        )


def _fields(planned: Planned) -> dict[str, Any]:
    return {k: v for k, v in asdict(planned).items() if k != "batch_id"}


def request_records(summary: RequestSummary) -> list[dict[str, Any]]:
    """What a cancel request did, one record a batch (-o jsonl; -o ids lists them all:
    each has a cancel request now)."""
    done = [
        *((i, "requested") for i in summary.new),
        *((i, "reopened") for i in summary.reopened),
        *((i, "already_requested") for i in summary.already),
    ]
    return [record(i, result, closed_at_once=summary.closed_at_once.get(i)) for i, result in done]


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
    return bool(plan.moves), _planned(row, "id", _note(row, plan), now)


def _selected(row: BatchSummary, now: datetime) -> tuple[bool, Planned]:
    if row.is_terminal:  # filters never choose a batch that has ended
        return False, _planned(row, "filter", f"already {row.status}", now)
    plan = _request(row, now)
    return bool(plan.moves), _planned(row, "filter", _note(row, plan), now)


def make_plan(
    queries: OperatorQueries, named: list[str], where: BatchFilter | None, now: datetime
) -> CancelPlan:
    plan = CancelPlan()
    known = queries.summaries(named)
    decisions = [_named(batch_id, known.get(batch_id), now) for batch_id in named]
    if where is not None:
        plan.chose_from_table = True
        plan.last_synced = queries.last_synced()
        given = set(named)
        decisions += [_selected(r, now) for r in queries.select_batches(where) if r.id not in given]
    for go, planned in decisions:
        (plan.to_cancel if go else plan.skipped).append(planned)
    return plan


# --- the command ------------------------------------------------------------------------


def run(ctx: Context) -> Exit:
    args = ctx.args
    given = ids_and_selector(ctx)
    if given is None:
        return Exit.USAGE
    ids, selector = given
    db = ctx.database()
    try:
        ids = named_ids(ctx, db, ids)
        now = database_clock(db).now()
        where = None if selector.is_empty else selector.batch_filter(now)
        plan = make_plan(OperatorQueries(db), ids.valid, where, now)
        if args.dry_run or not plan.to_cancel:
            _show_plan(ctx, plan, ids, dry_run=args.dry_run)
            return _exit(ids)
        if where is not None and not args.yes:
            # stdout stays what a program reads (-o json|jsonl|ids): the plan to confirm
            # goes to stderr then
            console = ctx.out if for_a_person(ctx) else ctx.err
            _show_plan(ctx, plan, ids, dry_run=False, console=console)
            refused = refusal(ctx, "cancel", len(plan.to_cancel))
            if refused is not None:
                return refused
        reason = args.reason
        if where is not None:
            chosen = f"chosen by {selector.describe()}"
            reason = f"{reason} ({chosen})" if reason else chosen
        summary = CancelStore(db).request(
            [p.batch_id for p in plan.to_cancel],
            now=now,
            requested_by=args.by or os_user(),
            reason=reason,
        )
    finally:
        db.dispose()
    _show_outcome(ctx, plan, summary, ids)
    return _exit(ids)


def _exit(ids: IdList) -> Exit:
    return Exit.ATTENTION if ids.rejected else Exit.OK


PLAN_COLUMNS = ("batch", "status", "age", "in status", "model", "metadata", "chosen by", "note")


def _table(title: str, rows: list[Planned]) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in PLAN_COLUMNS:
        table.add_column(column, overflow="fold")
    for p in rows[:SHOWN_ROWS]:
        table.add_row(
            cell(p.batch_id),
            cell(p.status or ("unknown" if p.age_seconds is None else UNOBSERVED)),
            age(p.age_seconds) if p.age_seconds is not None else "-",
            age(p.seconds_in_status) if p.seconds_in_status is not None else "-",
            cell(p.model),
            cell(p.metadata),
            p.chosen_by,
            cell(p.note),
        )
    if len(rows) > SHOWN_ROWS:
        more = f"... {len(rows) - SHOWN_ROWS} more (-o json or -o jsonl lists all)"
        table.add_row(more, *([""] * (len(PLAN_COLUMNS) - 1)))
    return table


def _show_plan(
    ctx: Context, plan: CancelPlan, ids: IdList, *, dry_run: bool, console: Console | None = None
) -> None:
    """The plan in a machine format (on stdout, with -o json|jsonl|ids and no console
    named), else as tables."""
    if console is None:
        document = {"dry_run": dry_run, **plan.to_dict(), "rejected": ids.rejected}
        if emit(ctx, document, plan.records()):
            return
        console = ctx.out
    if plan.to_cancel:
        console.print(_table(f"to cancel ({len(plan.to_cancel)})", plan.to_cancel))
    if plan.skipped:
        console.print(_table(f"skipped ({len(plan.skipped)})", plan.skipped))
    note = plan.table_note()
    if note is not None:
        console.print(f"note: {note}", markup=False)
    line = f"plan: cancel {len(plan.to_cancel)} batch(es), skip {len(plan.skipped)}"
    if not plan.to_cancel:
        line += "; nothing to cancel"
    elif dry_run:
        line += "; dry run: nothing was requested"
    console.print(line)


def _show_outcome(ctx: Context, plan: CancelPlan, summary: RequestSummary, ids: IdList) -> None:
    document = {
        "dry_run": False,
        **plan.to_dict(),
        "requested": summary.new,
        "already_requested": summary.already,
        "reopened": summary.reopened,
        "closed_at_once": summary.closed_at_once,
        "rejected": ids.rejected,
    }
    skipped = [r for r in plan.records() if r["result"] == "skipped"]
    if emit(ctx, document, [*request_records(summary), *skipped]):
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
