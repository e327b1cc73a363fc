"""Alembic, driven from code: `orchestrator db upgrade` (the start-up schema check, which
needs no alembic, is `orchestrator.db.revision`)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from orchestrator.db.engine import make_engine
from orchestrator.db.revision import MIGRATIONS_DIR, current_revision, head_revision

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "alembic_config_for_scripts",
    "create_stamped_sqlite",
    "current_revision",
    "downgrade",
    "head_revision",
    "lock_for_migrations",
    "upgrade",
]


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def alembic_config_for_scripts() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


# A constant of our choosing: the one PostgreSQL advisory lock every `db upgrade` takes.
MIGRATION_LOCK_KEY = 0x6F726368  # "orch"


def lock_for_migrations(connection: Connection) -> None:
    """Wait for any other upgrade of this database to finish (PostgreSQL).

    Without it two `db upgrade` at once both see no alembic_version table and the
    loser dies creating it. The lock is the transaction's: the commit that writes
    the new revision releases it, and the next upgrader then finds it up to date.
    SQLite serialises writers by itself.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine), revision)


def create_stamped_sqlite(path: Path, application_id: int) -> str:
    """A new SQLite file at ``path`` whose header carries ``application_id`` (bytes 68-71),
    migrated to the current schema; returns its URL. The stamp is written before WAL
    mode is switched on, so the mark is in the main file itself."""
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA application_id = {int(application_id)}")
        connection.commit()
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url
