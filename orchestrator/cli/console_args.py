"""`orchestrator console`: the arguments (what it does: console_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.selection import parse_duration

TOKEN_ENV = "ORCHESTRATOR_CONSOLE_TOKEN"
DEFAULT_PORT = 8470


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port from 0 to 65535")
    return int(text)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    console = commands.add_parser(
        "console",
        help="a read-only web console over the database (overview, batches, results)",
        description=(
            "Serve a small web console over the same database: an overview, a list of "
            "batches with the command line's filters, and each batch with its timeline, "
            "cancel attempts, result files and results (download as JSON lines or CSV). "
            "Pages refresh themselves. It changes nothing: GET and HEAD only, on a "
            "read-only database connection. It listens on 127.0.0.1 unless told "
            f"otherwise; on any other address it needs a token in {TOKEN_ENV}, which "
            "every request must then carry (open a page once with ?token=..., or send "
            "Authorization: Bearer ...)."
        ),
    )
    console.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    console.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
    )
    console.add_argument(
        "--refresh",
        type=parse_duration,
        default=parse_duration("2s"),
        metavar="DURATION",
        help="how often open pages refresh themselves (default 2s; 0s: never)",
    )
    console.set_defaults(handler="console_commands.run_console")
