"""Each long-running process's settings, assembled from ``Settings`` in one place.

``WorkerConfig`` and ``ReconcilerConfig`` extend the loop's own ``LoopConfig``
and are each built the same way, ``XConfig.from_settings(settings)``; the
policies the processes apply (``retry_policy``, ``poll_policy``) too.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.line_splitter import MAX_LINE_BYTES, READ_BYTES
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.leases import PROCESS_STALE_SECONDS
from orchestrator.processes.loop import LoopConfig
from orchestrator.settings import Settings

__all__ = [
    "ReconcilerConfig",
    "WorkerConfig",
    "poll_policy",
    "reconciler_setup",
    "retry_policy",
    "worker_setup",
]


@dataclass(frozen=True, kw_only=True)
class WorkerConfig(LoopConfig):
    concurrency: int = 16
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 20.0
    auth_pause_seconds: float = 300.0
    db_retry_initial_seconds: float = 1.0

    @staticmethod
    def from_settings(settings: Settings) -> WorkerConfig:
        return WorkerConfig(
            concurrency=settings.worker_concurrency,
            lease_seconds=settings.worker_lease_seconds,
            heartbeat_seconds=settings.worker_heartbeat_seconds,
            idle_seconds=settings.worker_idle_seconds,
            auth_pause_seconds=settings.worker_auth_pause_seconds,
            summary_seconds=settings.log_summary_seconds,
        )


@dataclass(frozen=True, kw_only=True)
class ReconcilerConfig(LoopConfig):
    concurrency: int = 8
    lease_seconds: float = 300.0
    chunk_lines: int = 2000
    download_attempts: int = 5
    page_size: int = 0  # 0: four claims per worker thread
    read_bytes: int = READ_BYTES
    max_line_bytes: int = MAX_LINE_BYTES
    webhook_silence_seconds: float = 900.0  # no webhook for this long: poll without them
    process_stale_seconds: float = PROCESS_STALE_SECONDS  # see orchestrator.db.leases
    list_min_tracked: int = 0  # this many in flight: observe by list pages too; 0: never
    list_concurrency: int = 4  # segments of a list walk this process fetches at once

    @staticmethod
    def from_settings(settings: Settings) -> ReconcilerConfig:
        return ReconcilerConfig(
            concurrency=settings.reconcile_concurrency,
            lease_seconds=settings.reconcile_lease_seconds,
            idle_seconds=settings.reconcile_idle_seconds,
            chunk_lines=settings.ingest_chunk_lines,
            download_attempts=settings.download_attempts,
            max_line_bytes=settings.ingest_max_line_bytes,
            webhook_silence_seconds=settings.webhook_silence_seconds,
            process_stale_seconds=settings.process_stale_seconds,
            summary_seconds=settings.log_summary_seconds,
            list_min_tracked=settings.reconcile_list_min_tracked,
            list_concurrency=settings.reconcile_list_concurrency,
        )


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        initial_delay=settings.retry_initial_delay,
        max_delay=settings.retry_max_delay,
        max_in_process_attempts=settings.retry_in_process_attempts,
        max_in_process_wait=settings.retry_max_in_process_wait,
        durable_initial=settings.retry_durable_initial,
        durable_max=settings.retry_durable_max,
    )


def poll_policy(settings: Settings) -> PollPolicy:
    return PollPolicy(
        initial_seconds=settings.poll_initial_seconds,
        backoff_factor=settings.poll_backoff_factor,
        max_seconds=settings.poll_max_seconds,
        cancelling_max_seconds=settings.poll_cancelling_max_seconds,
        error_max_seconds=settings.poll_error_max_seconds,
        overdue_cancelling_seconds=settings.overdue_cancelling_seconds,
        overdue_finalizing_seconds=settings.overdue_finalizing_seconds,
        file_id_repolls=settings.file_id_repolls,
        webhook_poll_seconds=settings.poll_interval_with_webhooks,
    )


def worker_setup(
    config: Settings | WorkerConfig, policy: RetryPolicy | None
) -> tuple[WorkerConfig, RetryPolicy]:
    """The worker's config and retry policy: from the settings, or as given."""
    if isinstance(config, Settings):
        return WorkerConfig.from_settings(config), policy or retry_policy(config)
    return config, policy or RetryPolicy()


def reconciler_setup(
    config: Settings | ReconcilerConfig, policy: PollPolicy | None
) -> tuple[ReconcilerConfig, PollPolicy]:
    """The reconciler's config and poll policy: from the settings, or as given."""
    if isinstance(config, Settings):
        return ReconcilerConfig.from_settings(config), policy or poll_policy(config)
    return config, policy or PollPolicy()
