"""`orchestrator db upgrade | current`: the schema."""

from __future__ import annotations

from orchestrator.cli.context import Context, Exit
from orchestrator.db import migrate
from orchestrator.db.engine import make_engine, require_existing_file
from orchestrator.db.revision import SchemaState, refuse_newer, schema_state
from orchestrator.db.urls import shown_url
from orchestrator.errors import ConfigError


def upgrade(ctx: Context) -> Exit:
    from alembic.util import CommandError  # late: `orchestrator --help` stays light

    revision = ctx.args.revision.strip()
    if not revision:
        raise ConfigError("--revision: give a revision, or leave it out for head")
    engine = make_engine(ctx.settings.database_url)
    try:
        refuse_newer(engine)  # exit 3, not alembic's "can't locate revision" as exit 2
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        after = migrate.current_revision(engine)
    except CommandError as exc:  # a revision alembic does not know
        raise ConfigError(f"--revision {revision}: {exc}") from None
    finally:
        engine.dispose()
    where = shown_url(engine.url)
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
    state = schema_state(current)
    if ctx.json:
        ctx.emit_json(
            {"current": current, "head": head, "up_to_date": current == head, "state": state}
        )
    else:
        said = _SAID[state]
        ctx.out.print(f"revision {current or '(none)'} (head {head}): {said}")
    return Exit.OK if state is SchemaState.CURRENT else Exit.DATABASE


_SAID = {
    SchemaState.CURRENT: "up to date",
    SchemaState.BEHIND: "behind: run `orchestrator db upgrade`",
    # `db upgrade` with this release cannot move a revision it does not know
    SchemaState.NEWER: "ahead/unknown (newer release): run the newer release",
}
