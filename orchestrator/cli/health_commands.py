"""`orchestrator healthcheck`: is the database there and migrated, is the API reachable
with our key, is sending paused, is anything overdue. For probes and for people."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.wiring import build_client
from orchestrator.core.cancel_request import CancelState
from orchestrator.core.visible import visible
from orchestrator.db import revision
from orchestrator.db.database import Database
from orchestrator.db.engine import (
    make_engine,
    normalise_url,
    require_existing_file,
    session_factory,
)
from orchestrator.db.queries import FleetSnapshot, OperatorQueries
from orchestrator.db.server_clock import database_clock
from orchestrator.db.urls import shown_url
from orchestrator.errors import ApiError, ConfigError, DatabaseError


@dataclass
class Health:
    database: str  # the URL, password hidden
    revision: str | None = None
    head: str | None = None
    database_error: str | None = None
    api: str | None = None  # "ok", or what went wrong; None when not checked
    paused: str | None = None
    paused_until: str | None = None
    overdue: int | None = None  # None: the database could not say
    cancels_pending: int | None = None

    @property
    def exit_code(self) -> Exit:
        if self.database_error is not None:
            return Exit.DATABASE
        if (self.api is not None and self.api != "ok") or self.paused is not None:
            return Exit.ATTENTION
        return Exit.OK


def run_healthcheck(ctx: Context) -> Exit:
    url = ctx.settings.database_url
    health = Health(database=shown_url(normalise_url(url)))
    try:
        require_existing_file(url)  # connecting would create an empty SQLite file
    except DatabaseError as exc:
        health.database_error = str(exc)
    else:
        engine = make_engine(url)
        try:
            _check_database(health, Database(engine, session_factory(engine)))
        finally:
            engine.dispose()
    unusable = _check_api(ctx, health) if ctx.args.api else None
    report(ctx, health)
    if unusable is not None and health.database_error is None:
        return unusable
    return health.exit_code


def _check_database(health: Health, db: Database) -> None:
    try:
        health.revision = revision.current_revision(db.engine)
        health.head = revision.head_revision()
        wrong = revision.mismatch(health.revision)
        if wrong is not None:  # a newer release's schema is not "run db upgrade"
            health.database_error = f"schema {wrong}"
            return
        snapshot = OperatorQueries(db).snapshot(database_clock(db).now())
    except DatabaseError as exc:
        health.database_error = str(exc)
        return
    _note_fleet(health, snapshot)


def _note_fleet(health: Health, snapshot: FleetSnapshot) -> None:
    health.overdue = snapshot.overdue
    health.cancels_pending = snapshot.cancels_by_state.get(CancelState.PENDING.value, 0)
    if snapshot.pause is not None:
        health.paused = snapshot.pause.reason
        health.paused_until = snapshot.pause.until.isoformat()


def _check_api(ctx: Context, health: Health) -> Exit | None:
    """Returns USAGE for settings that cannot work; else the answer is in ``health.api``."""
    try:
        client = build_client(ctx.settings)
    except ConfigError as exc:
        health.api = str(exc)
        return Exit.USAGE
    try:
        client.list_batches(limit=1)
        health.api = "ok"
    except ApiError as exc:
        health.api = str(exc)
    finally:
        client.close()
    return None


def report(ctx: Context, health: Health) -> None:
    if ctx.json:
        data: dict[str, Any] = asdict(health)
        data["healthy"] = health.exit_code is Exit.OK
        ctx.emit_json(data)
        return

    def say(line: str) -> None:
        # Errors quote the server and the database driver: controls spelled out.
        ctx.out.print(visible(line), markup=False)

    if health.database_error is not None:
        say(f"database {health.database}: FAILED: {health.database_error}")
    else:
        say(f"database {health.database}: ok (revision {health.revision})")
    if health.api is not None:
        verdict = "ok" if health.api == "ok" else f"FAILED: {health.api}"
        say(f"api {ctx.settings.base_url}: {verdict}")
    if health.database_error is not None:
        return
    if health.paused is not None:
        say(f"sending PAUSED until {health.paused_until}: {health.paused}")
    else:
        say("sending: not paused")
    say(f"overdue batches: {health.overdue}; cancels waiting to be sent: {health.cancels_pending}")
