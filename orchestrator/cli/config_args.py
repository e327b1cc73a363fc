"""`orchestrator config show`: the arguments (what it does: config_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import REPORTS, add_output_arguments


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="show the effective settings")
    sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = sub.add_parser(
        "show",
        help="print every setting in effect (the API key only as set / not set)",
        description="Print the effective settings after the config file, environment and flags.",
    )
    add_output_arguments(show, REPORTS, limit=False)
    show.set_defaults(handler="config_commands.show_settings", needs_schema=False)
