"""`orchestrator forget`: the arguments (what it does: forget_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.cancel_args import MAX_BY, MAX_REASON
from orchestrator.cli.output import BATCH_LISTS, add_output_arguments
from orchestrator.cli.selection import add_selector_arguments, text_of_at_most


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    forget = commands.add_parser(
        "forget",
        help="drop batches tracked by mistake (recorded in forgotten_batches)",
        description=(
            "Drop batches from the table: the batch, its history, its cancel request and "
            "attempts, and its stored results. For a batch tracked by mistake (a wrong id "
            "that the API answers 404 for ever). Nothing is sent to the API. It prints what "
            "it would drop and asks first (or --yes); each batch dropped is kept as a row "
            "of forgotten_batches (who, when, why, the batch as it was). A batch a worker "
            "or reconciler is working on right now is left alone: try again in a minute. "
            "Exit 1 when some were left alone or refused."
        ),
    )
    forget.add_argument(
        "ids",
        nargs="*",
        metavar="BATCH_ID",
        help="tracked batch ids, or unique beginnings of them (`-` reads ids from stdin)",
    )
    forget.add_argument("--from-file", metavar="PATH", help="read ids from a file (`-`: stdin)")
    forget.add_argument(
        "--reason", type=text_of_at_most(MAX_REASON), help="why (kept in forgotten_batches)"
    )
    forget.add_argument(
        "--by", type=text_of_at_most(MAX_BY), help="who forgets (default: the OS user)"
    )
    add_selector_arguments(forget, "choosing batches from the table (added to any ids given)")
    forget.add_argument("--dry-run", action="store_true", help="print the plan, drop nothing")
    forget.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation (scripts)"
    )
    add_output_arguments(forget, BATCH_LISTS, limit=False)
    forget.set_defaults(handler="forget_commands.run_forget")
