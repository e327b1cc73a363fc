"""`orchestrator reconcile`: the arguments (what it does: reconcile_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import REPORTS, add_output_arguments
from orchestrator.cli.worker_args import add_metrics_port_argument


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="poll tracked batches until terminal and store every result (long-running, or --once)",
        description=(
            "Poll every tracked batch with backoff until it is terminal, then download its "
            "output and error files and store one row per line, exactly once, resuming "
            "after any crash. Safe to run many of against one PostgreSQL database (leases). "
            "SIGTERM/SIGINT: end the HTTP calls in flight at once, without waiting for their "
            "answers (tried again later; result lines already stored stay stored), give back "
            "the batches not worked on yet, exit 0; a second signal stops at once."
        ),
    )
    reconcile.add_argument(
        "--once",
        action="store_true",
        help="one pass over what is due now; exit 1 if something needs a person",
    )
    reconcile.add_argument(
        "--concurrency",
        type=int,
        dest="setting_reconcile_concurrency",
        metavar="N",
        help="batches worked on at once (env ORCHESTRATOR_RECONCILE_CONCURRENCY, default 8)",
    )
    add_metrics_port_argument(reconcile)
    add_output_arguments(reconcile, REPORTS, limit=False)
    reconcile.set_defaults(handler="reconcile_commands.run_reconcile")
