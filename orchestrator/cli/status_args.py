"""`orchestrator status` and `orchestrator show`: the arguments (what they do:
status_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.selection import (
    add_metadata_argument,
    add_status_argument,
    parse_since,
    positive_int,
)

DEFAULT_LIMIT = 50


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
    status.set_defaults(handler="status_commands.run_status")

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
    show.set_defaults(handler="status_commands.run_show")
