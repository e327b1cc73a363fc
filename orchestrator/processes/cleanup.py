"""File clean-up: delete a batch's files from the API once every line of them is ours.

Opt-in (``cleanup_result_files``, and separately ``cleanup_input_files``). One
run queues the files the rule lets go (``core.cleanup``), then claims due
deletions page by page and sends ``DELETE /files/{id}`` for each, recording
every outcome: deleted, or already gone (404), both done; a retryable failure
is due again after the server's Retry-After or our durable backoff; a refusal
that asking again will not change is ``failed`` and needs a person.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.api.client import BatchApiClient
from orchestrator.api.errors import ApiAuthError, ApiNotFoundError, ApiStatusError, RetryLater
from orchestrator.core.cleanup import DeletionState
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.file_deletions import Deletion, DeletionResult, FileDeletionStore
from orchestrator.errors import ApiError, InvalidBatchId

__all__ = ["CleanupReport", "FileCleanup"]

log = logging.getLogger(__name__)

PAGE = 100
LEASE_SECONDS = 300.0  # a claimed deletion not recorded by then is due again


@dataclass
class CleanupReport:
    queued: int = 0
    deleted: int = 0
    already_gone: int = 0
    retrying: int = 0
    failed: list[str] = field(default_factory=list)
    auth_error: str | None = None

    def summary(self) -> str:
        text = (
            f"{self.queued} file(s) queued for deletion; {self.deleted} deleted, "
            f"{self.already_gone} already gone, {self.retrying} to retry later, "
            f"{len(self.failed)} refused"
        )
        if self.auth_error:
            text += f"; stopped: the API refused the key ({self.auth_error})"
        return text


class FileCleanup:
    def __init__(
        self,
        store: FileDeletionStore,
        client: BatchApiClient,
        *,
        policy: RetryPolicy,
        auth_pause_seconds: float,
        random_unit: Callable[[], float] = random.random,
        max_pages: int = 10,
        lease_seconds: float = LEASE_SECONDS,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.client = client
        self.policy = policy
        self.auth_pause_seconds = auth_pause_seconds
        self.random_unit = random_unit
        self.max_pages = max_pages  # bounds one run; the rest waits for the next
        self.lease_seconds = lease_seconds
        self.on_progress = on_progress  # after each deletion: a long run is alive

    def run_once(self) -> CleanupReport:
        report = CleanupReport(queued=self.store.enqueue(limit=PAGE * self.max_pages))
        for _ in range(PAGE * self.max_pages):
            # One at a time, each sent as soon as it is claimed: the rule was checked in
            # the claim, and a batch tracked (or a harvest undone) meanwhile cannot lose
            # a file to a claim made minutes before, behind a page of slow DELETEs.
            claims = self.store.claim_due(limit=1, lease_seconds=self.lease_seconds)
            if not claims:
                break
            (claim,) = claims
            result = self._delete(claim)
            self.store.record(claim.file_id, result)
            _count(report, claim, result)
            self.on_progress()
            if report.auth_error is not None:
                return report  # nothing will work until a person fixes the key
        return report

    def _delete(self, claim: Deletion) -> DeletionResult:
        extra = {"batch_id": claim.batch_id, "file_id": claim.file_id, "action": "file_deleted"}
        try:
            answer = self.client.delete_file(claim.file_id)
        except ApiNotFoundError as exc:
            log.info("%s file was already gone", claim.kind, extra=extra)
            return DeletionResult(
                state=DeletionState.DONE,
                outcome="already_gone",
                http_status=exc.status,
                request_id=exc.request_id,
            )
        except RetryLater as exc:
            log.warning("deleting the %s file: %s", claim.kind, exc, extra=extra)
            delay = self.policy.durable_delay(
                claim.attempts, self.random_unit(), exc.delay_s, went_out=exc.went_out
            )
            return DeletionResult(
                state=DeletionState.PENDING,
                http_status=exc.status,
                request_id=exc.request_id,
                error=str(exc),
                retry_in=delay,
                went_out=exc.went_out,
            )
        except ApiAuthError as exc:
            log.error("deleting the %s file: %s", claim.kind, exc, extra=extra)
            return DeletionResult(
                state=DeletionState.PENDING,
                outcome="auth",
                http_status=exc.status,
                request_id=exc.request_id,
                error=str(exc),
                retry_in=self.auth_pause_seconds,
            )
        except ApiStatusError as exc:  # refused, and asking again will not change that
            log.warning("deleting the %s file was refused: %s", claim.kind, exc, extra=extra)
            return DeletionResult(
                state=DeletionState.FAILED,
                outcome="refused",
                http_status=exc.status,
                request_id=exc.request_id,
                error=str(exc),
            )
        except InvalidBatchId as exc:
            return DeletionResult(state=DeletionState.FAILED, outcome="refused", error=str(exc))
        except ApiError as exc:  # transport or protocol trouble the client did not retry
            log.warning("deleting the %s file: %s", claim.kind, exc, extra=extra)
            backoff = self.policy.durable_backoff(claim.attempts, self.random_unit())
            return DeletionResult(state=DeletionState.PENDING, error=str(exc), retry_in=backoff)
        log.info("%s file deleted", claim.kind, extra=extra)
        return DeletionResult(
            state=DeletionState.DONE,
            outcome="deleted",
            http_status=answer.status,
            request_id=answer.request_id,
        )


def _count(report: CleanupReport, claim: Deletion, result: DeletionResult) -> None:
    if result.outcome == "deleted":
        report.deleted += 1
    elif result.outcome == "already_gone":
        report.already_gone += 1
    elif result.state is DeletionState.FAILED:
        report.failed.append(f"{claim.batch_id}/{claim.kind} {claim.file_id}: {result.error}")
    else:
        report.retrying += 1
        if result.outcome == "auth":
            report.auth_error = result.error
