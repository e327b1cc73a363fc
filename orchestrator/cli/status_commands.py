"""`orchestrator status` (a table of batches) and `orchestrator show BATCH_ID` (one in full)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.live import follow
from orchestrator.cli.render import COLUMN_GAP, age, counts, moment, plain, spanned
from orchestrator.cli.selection import (
    since_moment,
)
from orchestrator.clock import utcnow
from orchestrator.db.cancels import CancelStore
from orchestrator.db.models import Pause
from orchestrator.db.queries import (
    BatchFilter,
    BatchPage,
    BatchSummary,
    OperatorQueries,
)
from orchestrator.db.server_clock import database_clock
from orchestrator.errors import ConfigError

ERROR = "last error"
STATUS_COLUMNS = (
    "batch",
    "status",
    "cancel",
    "in status",
    "overdue",
    "results",
    "requests",
    ERROR,
)
# When a terminal is too narrow for every column, these are left out, first to last,
# until the rest fit. The batch id, status and cancel state are never left out or cut:
# `cancelling` and `cancelled` must not both read `can…`.
LEAVE_OUT = ("requests", "results", ERROR, "in status", "overdue")
# The last error takes what room is left, on one line; narrower than this it says too
# little, so the column is left out instead.
MIN_ERROR_WIDTH = 20


# --- status -----------------------------------------------------------------------------


def status_filter(args: argparse.Namespace) -> BatchFilter:
    now = utcnow()
    return BatchFilter(
        statuses=tuple(args.status),
        overdue=args.overdue,
        cancel_requested=args.cancel_requested,
        tracked_since=since_moment(args.since, now) if args.since is not None else None,
        metadata=tuple(args.metadata),
    )


def run_status(ctx: Context) -> Exit:
    where = status_filter(ctx.args)
    if ctx.args.watch:
        return watch_status(ctx, where)
    db = ctx.database()
    try:
        now = database_clock(db).now()
        page = OperatorQueries(db).list_batches(where, limit=ctx.args.limit)
        pause = CancelStore(db).active_pause(now)
    finally:
        db.dispose()
    if ctx.json:
        ctx.emit_json(status_json(page, now, pause))
    else:
        print_status(ctx, page, now, pause)
    return Exit.OK


def watch_status(ctx: Context, where: BatchFilter) -> Exit:
    """`status --watch`: the table, redrawn as batches change, until Ctrl-C (exit 0)."""
    if ctx.json:
        raise ConfigError("--watch draws a table for a person; scripts poll `status --json`")
    db = ctx.database()

    def frame() -> bool:
        now = database_clock(db).now()
        page = OperatorQueries(db).list_batches(where, limit=ctx.args.limit)
        print_status(ctx, page, now, CancelStore(db).active_pause(now))
        return False

    try:
        return follow(ctx, frame, ctx.args.interval, until_settled=False)
    finally:
        db.dispose()


def status_json(page: BatchPage, now: datetime, pause: Pause | None) -> dict[str, Any]:
    return {
        "batches": [
            {
                **asdict(row),
                "overdue": row.overdue,
                "seconds_in_status": round(row.seconds_in_status(now), 3),
            }
            for row in page.rows
        ],
        "shown": len(page.rows),
        "matching": page.matching,
        "more": page.matching - len(page.rows),
        "by_status": page.by_status,
        "paused": None if pause is None else {"until": pause.until, "reason": pause.reason},
    }


def print_status(ctx: Context, page: BatchPage, now: datetime, pause: Pause | None) -> None:
    if pause is not None:
        # First, where it cannot be missed: no cancel is sent until someone acts.
        ctx.out.print(
            f"SENDING PAUSED until {moment(pause.until)}: fix the key, then "
            f"`orchestrator resume`. Why: {plain(pause.reason)}",
            style="bold red",
            markup=False,
        )
    if page.rows:
        table, left_out = status_table([status_cells(row, now) for row in page.rows], ctx.out.width)
        # crop=False: when even the never-cut columns are wider than the terminal, their
        # lines run past its edge (it wraps them) rather than lose the end of an id.
        ctx.out.print(table, crop=False)
        if left_out:
            ctx.out.print(
                f"too narrow to show: {', '.join(left_out)} (widen the terminal or use --json)",
                markup=False,
            )
    ctx.out.print(summary_line(page), markup=False)


def status_cells(row: BatchSummary, now: datetime) -> dict[str, str]:
    """One row of the status table, by column title, as plain text."""
    cancel = row.cancel_state or ""
    if row.cancel_outcome:
        cancel = f"{cancel}: {row.cancel_outcome}"
    results = f"{row.results_stored}"
    if row.result_line_errors:
        results += f" (+{row.result_line_errors} unreadable)"
    return {
        "batch": plain(row.id),
        "status": plain(row.status or "unobserved"),
        "cancel": plain(cancel),
        "in status": age(row.seconds_in_status(now)),
        "overdue": "OVERDUE" if row.overdue else "",
        "results": results,
        "requests": counts(
            row.request_counts_total, row.request_counts_completed, row.request_counts_failed
        ),
        ERROR: plain(row.last_error),
    }


def status_table(rows: list[dict[str, str]], room: int) -> tuple[Table, list[str]]:
    """The status table for `room` columns, every cell on one line; and the columns
    left out to fit (see LEAVE_OUT)."""
    natural = {
        title: max(cell_len(text) for text in [title, *(row[title] for row in rows)])
        for title in STATUS_COLUMNS
    }
    needs = {**natural, ERROR: min(natural[ERROR], MIN_ERROR_WIDTH)}
    shown = list(STATUS_COLUMNS)
    left_out: list[str] = []
    for title in LEAVE_OUT:
        if spanned(needs[t] for t in shown) <= room:
            break
        shown.remove(title)
        left_out.append(title)
    needed = spanned(needs[t] for t in shown)
    # Wider than the room only when just the never-cut columns are left: then the table
    # is as wide as they need, so rich does not squeeze (and cut) them.
    table = Table(box=None, pad_edge=False, width=needed if needed > room else None)
    for title in shown:
        if title == ERROR:
            rest = spanned(natural[t] for t in shown if t != ERROR)
            table.add_column(title, no_wrap=True, max_width=room - rest - COLUMN_GAP)
        else:
            table.add_column(title, no_wrap=True)
    for row in rows:
        # Text, not markup: ids and error texts can hold square brackets.
        table.add_row(*(Text(row[title]) for title in shown))
    return table, left_out


def summary_line(page: BatchPage) -> str:
    if not page.matching:
        return "no batch matches"
    per_status = ", ".join(f"{n} {plain(status)}" for status, n in sorted(page.by_status.items()))
    line = f"{page.matching} batch(es) match: {per_status}"
    more = page.matching - len(page.rows)
    if more:
        line += f"; showing {len(page.rows)}, {more} more (raise --limit or narrow the filters)"
    return line
