"""`orchestrator config show`: the settings in effect, key redacted."""

from __future__ import annotations

from dataclasses import fields

from rich.table import Table
from rich.text import Text

from orchestrator.cli.context import Context, Exit
from orchestrator.core.visible import visible
from orchestrator.settings import Settings, env_name


def show_settings(ctx: Context) -> Exit:
    values = ctx.settings.redacted()
    if ctx.json:
        ctx.emit_json(values)
        return Exit.OK
    allowed = {f.name: f.metadata.get("range") for f in fields(Settings)}
    table = Table(box=None)
    # Too narrow a terminal folds a long value (a database URL) onto more lines; cut
    # short, with no mark, it would read as another value (`testdb` as `test`).
    for title in ("setting", "value", "environment variable", "allowed"):
        table.add_column(title, overflow="fold")
    for name, value in values.items():
        limits = allowed.get(name)
        table.add_row(
            name,
            Text("" if value is None else visible(str(value))),
            env_name(name),
            "" if limits is None else limits.describe(),
        )
    ctx.out.print(table)
    return Exit.OK
