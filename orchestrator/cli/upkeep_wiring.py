"""The reconciler's periodic jobs (file clean-up, retention), built from ``Settings``.

Apart from ``wiring`` so that a worker, which runs none of them, does not import them
(their stores and alembic-free but heavy modules cost start-up time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from orchestrator.api.client import BatchApiClient
from orchestrator.db.database import Database
from orchestrator.db.file_deletions import FileDeletionStore
from orchestrator.db.retention import RetentionStore
from orchestrator.probes import Heartbeat
from orchestrator.processes.cleanup import FileCleanup
from orchestrator.processes.config import retry_policy
from orchestrator.processes.retention import Pruner
from orchestrator.processes.upkeep import Upkeep
from orchestrator.settings import Settings

__all__ = ["build_upkeep", "file_cleanup"]


def file_cleanup(
    settings: Settings,
    db: Database,
    client: BatchApiClient,
    *,
    on_progress: Callable[[], None] = lambda: None,
) -> FileCleanup:
    store = FileDeletionStore(
        db, result_files=settings.cleanup_result_files, input_files=settings.cleanup_input_files
    )
    return FileCleanup(
        store,
        client,
        policy=retry_policy(settings),
        auth_pause_seconds=settings.worker_auth_pause_seconds,
        on_progress=on_progress,
    )


def build_upkeep(
    settings: Settings, db: Database, client: BatchApiClient, heartbeat: Heartbeat
) -> Upkeep | None:
    """The reconciler's periodic jobs the settings turn on; None when none is. They beat
    ``heartbeat`` as they go: a long clean-up or prune is not a stalled loop."""
    upkeep = Upkeep(heartbeat.clock)
    enabled = False
    if settings.cleanup_result_files or settings.cleanup_input_files:
        cleanup = file_cleanup(settings, db, client, on_progress=heartbeat.beat)
        upkeep.add_cleanup(cleanup, every_seconds=settings.cleanup_every_seconds)
        enabled = True
    if settings.retention_days is not None:
        upkeep.add_prune(
            Pruner(RetentionStore(db), on_chunk=heartbeat.beat),
            older_than=timedelta(days=settings.retention_days),
            every_seconds=settings.retention_every_seconds,
        )
        enabled = True
    return upkeep if enabled else None
