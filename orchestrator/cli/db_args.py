"""`orchestrator db upgrade | current`: the arguments (what they do: db_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import REPORTS, add_output_arguments


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser(
        "db",
        help="create or upgrade the database schema",
        description="Manage the database schema (Alembic migrations under migrations/).",
    )
    sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    up = sub.add_parser(
        "upgrade",
        help="apply every pending migration (safe to run again)",
        description="Apply pending migrations to ORCHESTRATOR_DATABASE_URL. Idempotent.",
    )
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    up.set_defaults(handler="db_commands.upgrade", needs_schema=False)
    current = sub.add_parser(
        "current",
        help="show the schema revision and whether it is current",
        description="Show the schema revision. Exit 0 when it is current, 3 when the "
        "database is behind, empty or absent (run `orchestrator db upgrade`).",
    )
    add_output_arguments(current, REPORTS, limit=False)
    current.set_defaults(handler="db_commands.show_current", needs_schema=False)
