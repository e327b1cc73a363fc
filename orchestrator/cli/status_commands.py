"""`orchestrator status` (a table of batches) and `orchestrator show BATCH_ID` (one in full)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.batch_names import resolve_batch_id
from orchestrator.cli.context import Context, Exit
from orchestrator.cli.render import COLUMN_GAP, age, cell, counts, moment, plain, spanned
from orchestrator.cli.selection import (
    since_moment,
)
from orchestrator.clock import utcnow
from orchestrator.db.cancels import CancelStore
from orchestrator.db.models import Pause
from orchestrator.db.queries import (
    BatchDetail,
    BatchFilter,
    BatchPage,
    BatchSummary,
    OperatorQueries,
)
from orchestrator.db.server_clock import database_clock
from orchestrator.errors import UnknownBatch

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
# Free text in `show` tables wraps, but no narrower than this (else a letter a line).
MIN_FREE_TEXT_WIDTH = 20
ATTEMPT_COLUMNS = (
    "attempt",
    "worker",
    "started_at",
    "finished_at",
    "http_status",
    "request_id",
    "outcome",
    "error",
)
FILE_COLUMNS = (
    "kind",
    "file_id",
    "state",
    "lines",
    "results",
    "malformed",
    "duplicates",
    "bytes",
    "sha256",
    "attempts",
    "last_error",
)
EVENT_COLUMNS = ("recorded_at", "kind", "from_status", "to_status", "server_at", "source", "detail")


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


# --- show -------------------------------------------------------------------------------


def run_show(ctx: Context) -> Exit:
    db = ctx.database()
    try:
        now = database_clock(db).now()
        queries = OperatorQueries(db)
        batch_id = resolve_batch_id(
            queries,
            ctx.args.batch_id,
            if_unknown=f"`orchestrator track {ctx.args.batch_id}` to follow it, or "
            "`orchestrator sync` to record every batch the API lists",
        )
        detail = queries.detail(batch_id)
    finally:
        db.dispose()
    if detail is None:  # gone between the two reads (deleted by hand)
        raise UnknownBatch(f"batch {batch_id} is not tracked here")
    if ctx.json:
        ctx.emit_json(show_json(detail, now))
    else:
        print_show(ctx, detail, now)
    return Exit.OK


def _seconds_in_status(detail: BatchDetail, now: datetime) -> float:
    since = detail.batch["status_changed_at"] or detail.batch["tracked_at"]
    assert isinstance(since, datetime)  # tracked_at is never NULL
    return max(0.0, float((now - since).total_seconds()))


def show_json(detail: BatchDetail, now: datetime) -> dict[str, Any]:
    return {
        **asdict(detail),
        "seconds_in_status": round(_seconds_in_status(detail, now), 3),
        "overdue": detail.batch["overdue_since"] is not None,
    }


def _fields(title: str, record: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left", box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in record.items():
        table.add_row(name, cell(value))
    return table


def _print_rows(
    out: Console, title: str, columns: tuple[str, ...], records: list[dict[str, Any]]
) -> None:
    """A table, a record a row. Every cell but the last column's (free text, which
    wraps) stays on one line, so ids and checksums can be copied whole. When that is
    too wide for the terminal, each record is printed as a list of its fields instead."""
    *whole, free = columns
    widths = [max([cell_len(c), *(cell_len(plain(r[c])) for r in records)]) for c in whole]
    if spanned([*widths, MIN_FREE_TEXT_WIDTH]) > out.width:
        for number, record in enumerate(records, 1):
            if number > 1:
                out.print()
            fields = {column: record[column] for column in columns}
            out.print(_fields(f"{title} ({number} of {len(records)})", fields))
        return
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in whole:
        table.add_column(column, no_wrap=True)
    table.add_column(free, overflow="fold", min_width=MIN_FREE_TEXT_WIDTH)
    for record in records:
        table.add_row(*(cell(record[c]) for c in columns))
    out.print(table)


def print_show(ctx: Context, detail: BatchDetail, now: datetime) -> None:
    batch = detail.batch
    headline = f"[bold]{cell(batch['id'])}[/]: {cell(batch['status'] or 'unobserved')} for "
    headline += age(_seconds_in_status(detail, now))
    if isinstance(overdue := batch["overdue_since"], datetime):
        headline += f", [bold red]OVERDUE[/] since {moment(overdue)}"
    ctx.out.print(headline)
    ctx.out.print(_fields("batch", batch))
    if detail.cancel_request is None:
        ctx.out.print("\nno cancel requested")
    else:
        ctx.out.print()
        ctx.out.print(_fields("cancel request", detail.cancel_request))
        if detail.attempts:
            _print_rows(ctx.out, "cancel attempts", ATTEMPT_COLUMNS, detail.attempts)
    kinds = ", ".join(f"{n} {cell(kind)}" for kind, n in sorted(detail.results_by_kind.items()))
    ctx.out.print(
        f"\nresults stored: {sum(detail.results_by_kind.values())}"
        + (f" ({kinds})" if kinds else "")
        + f"; unreadable lines: {detail.unreadable_lines}"
    )
    if detail.files:
        _print_rows(ctx.out, "result files", FILE_COLUMNS, detail.files)
    ctx.out.print()
    _print_rows(ctx.out, "history", EVENT_COLUMNS, detail.events)
