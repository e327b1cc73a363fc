"""`orchestrator healthcheck`: the arguments (what it does: health_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import REPORTS, add_output_arguments

EXIT_CODES = """\
exit codes:
  0  healthy (overdue batches are reported, not failed on)
  1  the API check failed (unreachable, key refused), or sending is paused
  2  bad settings (e.g. --api without OPENAI_API_KEY)
  3  database unreachable, or its schema is not at this version's revision
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = commands.add_parser(
        "healthcheck",
        help="check the database (and with --api the Batch API); exit code says which failed",
        description=(
            "Check that the database is reachable and migrated; with --api, that the Batch "
            "API answers GET /v1/batches?limit=1 with our key. Reports whether sending is "
            "paused and how many batches are overdue."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    health.add_argument("--api", action="store_true", help="also call the API (one cheap GET)")
    add_output_arguments(health, REPORTS, limit=False)
    health.set_defaults(handler="health_commands.run_healthcheck")
