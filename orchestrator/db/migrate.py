"""Alembic, driven from code: `orchestrator db upgrade` (the start-up schema check, which
needs no alembic, is `orchestrator.db.revision`)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from orchestrator.db.revision import MIGRATIONS_DIR, current_revision, head_revision

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "alembic_config_for_scripts",
    "current_revision",
    "downgrade",
    "head_revision",
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


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine), revision)
