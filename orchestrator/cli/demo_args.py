"""`orchestrator demo`: the arguments (what it does: demo_command)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.output import REPORTS, add_output_arguments

DEFAULT_DATABASE = Path("orchestrator-demo.sqlite3")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the main job end to end against a local simulator (no API key needed)",
        description=(
            "Start a Batch API simulator on a free loopback port, create a few dozen batches "
            "in every status, ask to cancel them all, and run the worker and the reconciler "
            "until every cancel is settled and every partial result is recorded. Uses its "
            "own SQLite file, --database, which it recreates each run: it only replaces a "
            "file there that an earlier demo made, and refuses (exit 2) to touch anything "
            "else, such as a real orchestrator database."
        ),
    )
    demo.add_argument(
        "--database",
        type=Path,
        default=DEFAULT_DATABASE,
        metavar="PATH",
        help=(
            f"the demo's SQLite file (default ./{DEFAULT_DATABASE}); must not exist yet "
            "or be one an earlier demo made"
        ),
    )
    add_output_arguments(demo, REPORTS, limit=False)
    demo.set_defaults(handler="demo_command.run", needs_schema=False)
