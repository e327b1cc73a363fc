"""`orchestrator status` (a table of batches) and `orchestrator show BATCH_ID` (one in full)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich.table import Table

from orchestrator.cli.batch_names import resolve_batch_id
from orchestrator.cli.context import Context, Exit
from orchestrator.cli.render import age, cell, counts, moment
from orchestrator.cli.selection import (
    add_metadata_argument,
    add_status_argument,
    parse_since,
    positive_int,
    since_moment,
)
from orchestrator.clock import utcnow
from orchestrator.db.queries import BatchDetail, BatchFilter, BatchPage, OperatorQueries
from orchestrator.errors import UnknownBatch

DEFAULT_LIMIT = 50
ERROR_WIDTH = 60
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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="a table of tracked batches: status, cancel, age, results, last error",
        description=(
            "List tracked batches, newest first: status, cancel state and outcome, time in "
            "the current status, overdue flag, results stored against the server's request "
            "counts, and the last error. Filters combine (all must hold). Ends with the "
            "count of matching batches per status."
        ),
    )
    add_status_argument(status, "only batches in this status")
    status.add_argument("--overdue", action="store_true", help="only overdue batches")
    status.add_argument(
        "--cancel-requested", action="store_true", help="only batches asked to be cancelled"
    )
    status.add_argument(
        "--since",
        type=parse_since,
        metavar="DURATION|ISO",
        help="only batches tracked since then (10m, 2h, 1d, or 2026-11-24T03:00Z)",
    )
    add_metadata_argument(status)
    status.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N batches (default {DEFAULT_LIMIT}); the rest are counted",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=run_status)

    show = commands.add_parser(
        "show",
        help="everything recorded about one batch",
        description=(
            "Every field and timestamp of one batch, its cancel request and every attempt, "
            "its history, and its results per file (state, lines, bytes, checksum, "
            "unreadable lines). Exit 4 if the batch is not tracked."
        ),
    )
    show.add_argument(
        "batch_id",
        metavar="BATCH_ID",
        help="the batch id, or enough of its beginning to name one tracked batch",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=run_show)


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
        now = utcnow()
        page = OperatorQueries(db).list_batches(where, limit=ctx.args.limit)
    finally:
        db.dispose()
    if ctx.json:
        ctx.emit_json(status_json(page, now))
    else:
        print_status(ctx, page, now)
    return Exit.OK


def status_json(page: BatchPage, now: datetime) -> dict[str, Any]:
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
    }


def print_status(ctx: Context, page: BatchPage, now: datetime) -> None:
    if page.rows:
        table = Table(box=None, pad_edge=False)
        for title in ("batch", "status", "cancel", "in status", "overdue", "results", "requests"):
            table.add_column(title, no_wrap=True)
        table.add_column("last error", overflow="fold")
        for row in page.rows:
            cancel = row.cancel_state or ""
            if row.cancel_outcome:
                cancel = f"{cancel}: {row.cancel_outcome}"
            results = f"{row.results_stored}"
            if row.result_line_errors:
                results += f" (+{row.result_line_errors} unreadable)"
            table.add_row(
                cell(row.id),
                cell(row.status or "unobserved"),
                cell(cancel),
                age(row.seconds_in_status(now)),
                "OVERDUE" if row.overdue else "",
                results,
                counts(
                    row.request_counts_total,
                    row.request_counts_completed,
                    row.request_counts_failed,
                ),
                cell(row.last_error, width=ERROR_WIDTH),
            )
        ctx.out.print(table)
    ctx.out.print(summary_line(page))


def summary_line(page: BatchPage) -> str:
    if not page.matching:
        return "no batch matches"
    per_status = ", ".join(f"{n} {status}" for status, n in sorted(page.by_status.items()))
    line = f"{page.matching} batch(es) match: {per_status}"
    more = page.matching - len(page.rows)
    if more:
        line += f"; showing {len(page.rows)}, {more} more (raise --limit or narrow the filters)"
    return line


# --- show -------------------------------------------------------------------------------


def run_show(ctx: Context) -> Exit:
    db = ctx.database()
    try:
        now = utcnow()
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


def _rows(title: str, columns: tuple[str, ...], records: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(*(cell(record[c]) for c in columns))
    return table


def print_show(ctx: Context, detail: BatchDetail, now: datetime) -> None:
    batch = detail.batch
    headline = f"[bold]{cell(batch['id'])}[/]: {cell(batch['status'] or 'unobserved')} for "
    headline += age(_seconds_in_status(detail, now))
    if batch["overdue_since"] is not None:
        headline += f", [bold red]OVERDUE[/] since {moment(batch['overdue_since'])}"
    ctx.out.print(headline)
    ctx.out.print(_fields("batch", batch))
    if detail.cancel_request is None:
        ctx.out.print("\nno cancel requested")
    else:
        ctx.out.print()
        ctx.out.print(_fields("cancel request", detail.cancel_request))
        if detail.attempts:
            ctx.out.print(_rows("cancel attempts", ATTEMPT_COLUMNS, detail.attempts))
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(detail.results_by_kind.items()))
    ctx.out.print(
        f"\nresults stored: {sum(detail.results_by_kind.values())}"
        + (f" ({kinds})" if kinds else "")
        + f"; unreadable lines: {detail.unreadable_lines}"
    )
    if detail.files:
        ctx.out.print(_rows("result files", FILE_COLUMNS, detail.files))
    ctx.out.print()
    ctx.out.print(_rows("history", EVENT_COLUMNS, detail.events))
