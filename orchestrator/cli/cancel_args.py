"""`orchestrator cancel` and `orchestrator track`: the arguments (what they do:
cancel_commands, and cancel_plan for the filters)."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import BATCH_LISTS, add_output_arguments
from orchestrator.cli.selection import add_selector_arguments, text_of_at_most
from orchestrator.core.ids import BATCH_PREFIX

MAX_BY = 128  # the width of cancel_requests.requested_by
MAX_REASON = 4096  # a sentence or a ticket link, not a document
IDS_HELP = (
    "batch ids (`-` reads ids from stdin, one per line). A beginning of a tracked id names "
    f"that batch, as with `show`; an id not tracked yet must begin {BATCH_PREFIX} (see --any-id)"
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cancel = commands.add_parser(
        "cancel",
        help="ask for batches to be cancelled (the worker sends it)",
        description=(
            "Record a durable request to cancel each batch and return at once; "
            "`orchestrator worker` sends it, with retries, and the reconciler harvests the "
            "partial results. Asking twice is harmless. Malformed ids are reported and "
            "skipped; the rest go through. With filters (--status, --older-than, ...) it "
            "chooses batches from the table, prints the plan and asks before requesting."
        ),
    )
    _id_arguments(cancel)
    cancel.add_argument(
        "--reason", type=text_of_at_most(MAX_REASON), help="why (kept in the batch's history)"
    )
    cancel.add_argument(
        "--by", type=text_of_at_most(MAX_BY), help="who asks (default: the OS user)"
    )
    cancel.add_argument(
        "--withdraw",
        action="store_true",
        help="take back the cancel requests of these batches instead, if not sent yet "
        "(pending, no attempt made, no worker on it); the others are kept, with why",
    )
    add_selection_arguments(cancel)
    cancel.set_defaults(handler="cancel_commands.run_cancel")

    track = commands.add_parser(
        "track",
        help="follow batches without cancelling them",
        description="Record batches for the reconciler to follow and harvest; no cancel is sent.",
    )
    _id_arguments(track)
    track.set_defaults(handler="cancel_commands.run_track")


def _id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", metavar="BATCH_ID", help=IDS_HELP)
    parser.add_argument("--from-file", metavar="PATH", help="read ids from a file (`-`: stdin)")
    parser.add_argument(
        "--any-id",
        action="store_true",
        help=f"take an id not tracked yet even if it does not begin {BATCH_PREFIX} "
        "(an id of another form, such as a gateway's)",
    )
    add_output_arguments(parser, BATCH_LISTS, limit=False)


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    add_selector_arguments(
        parser,
        "choosing batches from the table (they add to any ids given; batches that have "
        "already ended, or whose cancel is already requested, are skipped)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, request nothing")
    parser.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation (scripts)"
    )
