"""`orchestrator db upgrade | current`: the schema."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context, Exit
from orchestrator.db import migrate
from orchestrator.db.engine import make_engine, require_existing_file


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
    up.set_defaults(handler=upgrade, needs_schema=False)
    current = sub.add_parser(
        "current",
        help="show the schema revision and whether it is current",
        description="Show the schema revision. Exit 0 when it is current, 3 when the "
        "database is behind, empty or absent (run `orchestrator db upgrade`).",
    )
    current.add_argument("--json", action="store_true", help="machine-readable output")
    current.set_defaults(handler=show_current, needs_schema=False)


def upgrade(ctx: Context) -> Exit:
    engine = make_engine(ctx.settings.database_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, ctx.args.revision)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        ctx.err.print(f"database {where} is already at revision {after}")
    else:
        ctx.err.print(f"database {where} upgraded from {before or 'empty'} to {after}")
    return Exit.OK


def show_current(ctx: Context) -> Exit:
    require_existing_file(ctx.settings.database_url)
    engine = make_engine(ctx.settings.database_url)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if ctx.json:
        ctx.emit_json({"current": current, "head": head, "up_to_date": current == head})
    else:
        state = "up to date" if current == head else "behind: run `orchestrator db upgrade`"
        ctx.out.print(f"revision {current or '(none)'} (head {head}): {state}")
    return Exit.OK if current == head else Exit.DATABASE
