"""Alembic environment: runs on the engine the orchestrator hands it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from orchestrator.db.engine import make_engine
from orchestrator.db.migrate import lock_for_migrations
from orchestrator.db.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if isinstance(engine, Engine):
        return engine
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("run migrations with `orchestrator db upgrade`")
    return make_engine(url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        lock_for_migrations(connection)  # before alembic looks at alembic_version
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
