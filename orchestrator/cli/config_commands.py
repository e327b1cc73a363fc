"""`orchestrator config show`: the settings in effect, key redacted."""

from __future__ import annotations

from rich.table import Table

from orchestrator.cli.context import Context, Exit
from orchestrator.settings import env_name


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
