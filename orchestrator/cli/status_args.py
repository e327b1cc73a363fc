"""`orchestrator status` and `orchestrator show`: the arguments (what they do:
status_commands)."""

from __future__ import annotations

import argparse
from argparse import SUPPRESS

from orchestrator.cli.output import add_output_arguments
from orchestrator.cli.selection import add_selector_arguments, parse_since


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
    status.add_argument(
        "--since", dest="created_after", action="append", type=parse_since, help=SUPPRESS
    )
    add_output_arguments(status)
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
