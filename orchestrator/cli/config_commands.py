"""`orchestrator config show`: the settings in effect, key redacted."""

from __future__ import annotations

import argparse

from rich.table import Table

from orchestrator.cli.context import Context, Exit
from orchestrator.settings import env_name


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="show the effective settings")
    sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = sub.add_parser(
        "show",
        help="print every setting in effect (the API key only as set / not set)",
        description="Print the effective settings after the config file, environment and flags.",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=show_settings, needs_schema=False)


def show_settings(ctx: Context) -> Exit:
    values = ctx.settings.redacted()
    if ctx.json:
        ctx.emit_json(values)
        return Exit.OK
    table = Table(box=None)
    for title in ("setting", "value", "environment variable"):
        table.add_column(title, no_wrap=True, overflow="fold")
    for name, value in values.items():
        table.add_row(name, "" if value is None else str(value), env_name(name))
    ctx.out.print(table)
    return Exit.OK
