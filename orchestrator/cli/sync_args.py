"""`orchestrator sync`: the arguments (what it does: sync_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import REPORTS, add_output_arguments
from orchestrator.cli.selection import positive_int

PAGE_SIZE = 100  # the API's largest page


def page_size(text: str) -> int:
    """1 to 100, the API's limits for one page of `GET /batches`."""
    value = positive_int(text)
    if value > PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r}: the API lists at most {PAGE_SIZE} a page")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sync = commands.add_parser(
        "sync",
        help="record every batch the API lists (made by any system)",
        description=(
            "Walk GET /v1/batches, every page, and record each batch the key can see, through "
            "the same rules as every poll (statuses only move forward). Batches still running "
            "are then followed by the reconciler like any tracked batch. Batches that had "
            "already ended when first seen are recorded but not harvested, unless "
            "--harvest-finished: their files may be large and belong to someone else."
        ),
    )
    sync.add_argument(
        "--limit-pages",
        type=positive_int,
        metavar="N",
        help="stop after N pages (newest batches first)",
    )
    sync.add_argument(
        "--page-size",
        type=page_size,
        default=PAGE_SIZE,
        metavar="1..100",
        help=f"batches per page (default {PAGE_SIZE})",
    )
    sync.add_argument(
        "--harvest-finished",
        action="store_true",
        help="also download the results of batches that had ended before we first saw them",
    )
    add_output_arguments(sync, REPORTS, limit=False)
    sync.set_defaults(handler="sync_commands.run_sync")
