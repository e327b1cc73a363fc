"""`orchestrator status` and `orchestrator show`: the arguments (what they do:
status_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import REPORTS, add_output_arguments, retire
from orchestrator.cli.selection import add_selector_arguments

DEFAULT_INTERVAL = 2.0  # seconds between two reads of a live view
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0


SINCE_IS_GONE = (
    "it counted from when we began tracking a batch; select by the server's created_at "
    "with --created-after WHEN (an ISO time or an age, like 2h) or --newer-than AGE"
)


def interval_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected seconds, at least {MIN_INTERVAL:g} and at most {MAX_INTERVAL:g}"
        )
    return value


def add_live_arguments(parser: argparse.ArgumentParser, flag: str, what: str) -> None:
    """`--watch`/`--follow` and the `--interval` it reads the database at."""
    parser.add_argument(flag, action="store_true", help=what)
    parser.add_argument(
        "--interval",
        type=interval_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"with {flag}: read the database this often (default {DEFAULT_INTERVAL:g})",
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="a table of tracked batches: status, age, cancel, answers and errors",
        description=(
            "List tracked batches, newest first: status, cancel state and outcome, age "
            "(since the server created the batch) and time in the current status (since the "
            "server's timestamp for it), by the database server's clock; the overdue flag; "
            "answers (output-file results) and errors (error-file results) recorded against "
            "the server's request counts; and the last error. Ends with the count of "
            "matching batches per status. A batch the API has not been asked about yet "
            "shows as `unobserved` (NULL in the batches table's status column), in the "
            "table and in JSON alike."
        ),
    )
    add_selector_arguments(status, "choosing batches")
    # Before the selector language, --since counted from when we began tracking a batch;
    # every time flag now reads the server's created_at. Refused, not read anew.
    retire(status, "--since", SINCE_IS_GONE)
    add_output_arguments(status)
    add_live_arguments(
        status, "--watch", "redraw the table as batches change, until Ctrl-C (which exits 0)"
    )
    status.set_defaults(handler="status_commands.run_status")

    show = commands.add_parser(
        "show",
        help="one batch: status, age, cancel, results kept, what happens next, history",
        description=(
            "One batch, what a person asks first at the top: its status and age (by the "
            "server's created_at), what became of the cancel, the answers and errors kept, "
            "and what happens next (the next poll, the next cancel attempt). Then the cancel's "
            "attempts, the result files and the history. --verbose adds every recorded field "
            "(lease_owner, version, checksums...). Exit 4 if the batch is not tracked."
        ),
    )
    show.add_argument(
        "batch_id",
        metavar="BATCH_ID",
        help="the batch id, or enough of its beginning to name one tracked batch",
    )
    add_output_arguments(show, REPORTS, limit=False)
    show.add_argument(
        "-v", "--verbose", action="store_true", help="every recorded field, internals included"
    )
    add_live_arguments(
        show,
        "--follow",
        "redraw as the batch changes; ends when nothing more can happen, or on Ctrl-C",
    )
    show.set_defaults(handler="show_commands.run_show")
