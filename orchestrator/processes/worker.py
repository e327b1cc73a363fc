"""The cancel worker: lease due cancel requests, send them, record every answer.

One loop thread claims work and hands each claim to a thread pool; each task
sends one cancel (the client retries briefly in-process) and records the
attempt. Long waits are never slept through: they become the request's
persisted next attempt time, so a restart or another worker honours them too.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from orchestrator.api.client import BatchApiClient
from orchestrator.api.errors import (
    ApiAuthError,
    ApiNotFoundError,
    ApiRejectedError,
    ApiStatusError,
    RetryLater,
)
from orchestrator.clock import Clock
from orchestrator.core.cancel_policy import AttemptOutcome, after_rejection
from orchestrator.core.observation import BatchObservation, MalformedBatch, parse_batch
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import Attempt, CancelStore, Claim
from orchestrator.errors import ApiError, DatabaseUnavailable, InvalidBatchId

log = logging.getLogger(__name__)

NOT_FOUND_MESSAGE = "no such batch, or not visible to this key (check the id, org and project)"


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    concurrency: int = 16
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 20.0
    idle_seconds: float = 1.0
    auth_pause_seconds: float = 300.0
    db_retry_max_seconds: float = 30.0


@dataclass
class WorkerReport:
    sent: int = 0
    accepted: int = 0
    too_late: int = 0
    retrying: int = 0
    failed: int = 0
    released: int = 0
    paused: str | None = None
    db_outages: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)

    def count(self, batch_id: str, outcome: AttemptOutcome) -> None:
        self.sent += 1
        self.outcomes[batch_id] = outcome.value
        if outcome is AttemptOutcome.ACCEPTED:
            self.accepted += 1
        elif outcome is AttemptOutcome.TOO_LATE:
            self.too_late += 1
        elif outcome in (AttemptOutcome.RETRY, AttemptOutcome.AUTH):
            self.retrying += 1
        else:
            self.failed += 1

    def summary(self) -> str:
        text = (
            f"{self.sent} cancel attempt(s): {self.accepted} accepted, {self.too_late} too late, "
            f"{self.retrying} to retry later, {self.failed} failed; "
            f"{self.released} lease(s) released"
        )
        if self.paused:
            text += f"; sending paused: {self.paused}"
        return text


class CancelWorker:
    def __init__(
        self,
        store: CancelStore,
        client: BatchApiClient,
        *,
        config: WorkerConfig,
        policy: RetryPolicy,
        clock: Clock,
        owner: str,
        random_unit: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.client = client
        self.config = config
        self.policy = policy
        self.clock = clock
        self.owner = owner
        self.random_unit = random_unit
        self.report = WorkerReport()
        self._lock = threading.Lock()

    # --- the loop -------------------------------------------------------------

    def run(self, stop: threading.Event, *, once: bool = False) -> WorkerReport:
        """Work until `stop` is set (or, with `once`, until nothing is due now)."""
        in_flight: dict[Future[None], Claim] = {}
        last_heartbeat = self.clock.now()
        db_failures = 0
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="cancel") as pool:
            while not stop.is_set():
                try:
                    now = self.clock.now()
                    if self._paused(now, stop):
                        self._reap(in_flight)
                        if once and not in_flight:
                            break
                        continue
                    claims = self.store.claim_due(
                        self.owner,
                        now=now,
                        limit=self.config.concurrency - len(in_flight),
                        lease_seconds=self.config.lease_seconds,
                    )
                    for claim in claims:
                        in_flight[pool.submit(self._process, claim)] = claim
                    if now - last_heartbeat >= timedelta(seconds=self.config.heartbeat_seconds):
                        self.store.heartbeat(
                            self.owner,
                            [c.batch_id for c in in_flight.values()],
                            now=now,
                            lease_seconds=self.config.lease_seconds,
                        )
                        last_heartbeat = now
                    db_failures = 0
                except DatabaseUnavailable as exc:
                    db_failures += 1
                    self.report.db_outages += 1
                    pause = min(self.config.db_retry_max_seconds, 0.5 * 2**db_failures)
                    log.warning(
                        "database unavailable (%s); retrying in %.1fs",
                        exc,
                        pause,
                        extra={"action": "db_unavailable"},
                    )
                    stop.wait(pause)
                    continue
                if once and not in_flight and not claims:
                    break
                self._wait(in_flight, stop, busy=bool(claims))
            self._shut_down(in_flight)
        return self.report

    def _wait(
        self, in_flight: dict[Future[None], Claim], stop: threading.Event, *, busy: bool
    ) -> None:
        """Block until a task finishes or it is time to look for work again."""
        timeout = 0.05 if busy else self.config.idle_seconds
        if in_flight:
            wait(list(in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
            self._reap(in_flight)
        else:
            stop.wait(timeout)

    @staticmethod
    def _reap(in_flight: dict[Future[None], Claim]) -> None:
        for future in [f for f in in_flight if f.done()]:
            in_flight.pop(future)
            future.result()  # surface bugs; _process catches what it expects

    def _shut_down(self, in_flight: dict[Future[None], Claim]) -> None:
        """Stop: let running sends finish and be recorded; give back what never started."""
        for future, claim in list(in_flight.items()):
            if future.cancel():
                try:
                    self.report.released += self.store.release(self.owner, [claim.batch_id])
                except DatabaseUnavailable:
                    log.warning("could not release %s; its lease will expire", claim.batch_id)
        wait([f for f in in_flight if not f.cancelled()])

    def _paused(self, now: datetime, stop: threading.Event) -> bool:
        pause = self.store.active_pause(now)
        if pause is None:
            return False
        if self.report.paused != pause.reason:
            log.error(
                "ALL SENDING PAUSED until %s: %s",
                pause.until.isoformat(),
                pause.reason,
                extra={"action": "paused"},
            )
        self.report.paused = pause.reason
        stop.wait(min(self.config.idle_seconds * 5, max(0.0, (pause.until - now).total_seconds())))
        return True

    # --- one claim ------------------------------------------------------------

    def _process(self, claim: Claim) -> None:
        started = self.clock.now()
        attempt = self._send(claim, started)
        for delay in (0.5, 1, 2, 4, 8, 15):
            try:
                state = self.store.record_attempt(claim, self.owner, attempt)
                break
            except DatabaseUnavailable as exc:
                log.warning(
                    "could not record the attempt on %s (%s); retrying",
                    claim.batch_id,
                    exc,
                    extra={"batch_id": claim.batch_id},
                )
                threading.Event().wait(delay)
        else:
            # Lost: the lease expires and the cancel is sent again (it is idempotent).
            log.error(
                "gave up recording the attempt on %s; it will be retried",
                claim.batch_id,
                extra={"batch_id": claim.batch_id},
            )
            return
        with self._lock:
            self.report.count(claim.batch_id, attempt.outcome)
        if attempt.outcome is AttemptOutcome.AUTH:
            self._pause_everyone(attempt)
        log.info(
            "cancel %s: %s -> request %s",
            claim.batch_id,
            attempt.outcome.value,
            state,
            extra={
                "batch_id": claim.batch_id,
                "request_id": attempt.request_id,
                "action": "cancel_attempt",
            },
        )

    def _send(self, claim: Claim, started: datetime) -> Attempt:
        try:
            result = self.client.cancel(claim.batch_id)
        except RetryLater as exc:
            if exc.status == 409:  # refused after retries: ask the server what is true
                return self._after_refusal(claim, started, exc.status, exc.request_id, str(exc))
            return self._retry(claim, started, exc.status, exc.request_id, str(exc), exc.delay_s)
        except ApiAuthError as exc:
            return self._attempt(AttemptOutcome.AUTH, started, exc, retry_in=self._auth_pause())
        except ApiNotFoundError as exc:
            return self._after_refusal(claim, started, exc.status, exc.request_id, str(exc))
        except ApiRejectedError as exc:
            return self._after_refusal(claim, started, exc.status, exc.request_id, str(exc))
        except InvalidBatchId as exc:
            return Attempt(AttemptOutcome.INVALID, started, self.clock.now(), error=str(exc))
        except ApiError as exc:  # protocol or transport error that escaped the client
            return self._retry(claim, started, None, None, str(exc), None)
        try:
            observed = parse_batch(result.data)
        except MalformedBatch as exc:
            observed = None
            log.warning("cancel of %s accepted but the body was odd: %s", claim.batch_id, exc)
        return Attempt(
            AttemptOutcome.ACCEPTED,
            started,
            self.clock.now(),
            http_status=result.status,
            request_id=result.request_id,
            observed=observed,
        )

    def _after_refusal(
        self,
        claim: Claim,
        started: datetime,
        status: int | None,
        request_id: str | None,
        error: str,
    ) -> Attempt:
        """The cancel was refused: GET the batch and record the truth."""
        try:
            result = self.client.retrieve(claim.batch_id)
            observed = parse_batch(result.data)
        except ApiNotFoundError as exc:
            return Attempt(
                AttemptOutcome.NOT_FOUND,
                started,
                self.clock.now(),
                http_status=exc.status,
                request_id=exc.request_id,
                error=f"{NOT_FOUND_MESSAGE}: {exc}",
            )
        except ApiAuthError as exc:
            return self._attempt(AttemptOutcome.AUTH, started, exc, retry_in=self._auth_pause())
        except (ApiError, MalformedBatch) as exc:
            return self._retry(
                claim, started, status, request_id, f"{error}; then the GET failed: {exc}", None
            )
        outcome = after_rejection(observed.status)
        if outcome is AttemptOutcome.RETRY:
            return self._retry(
                claim,
                started,
                status,
                request_id,
                f"{error}; the batch is {observed.status_text}",
                None,
                observed=observed,
            )
        return Attempt(
            outcome,
            started,
            self.clock.now(),
            http_status=status,
            request_id=request_id,
            error=error,
            observed=observed,
        )

    def _retry(
        self,
        claim: Claim,
        started: datetime,
        status: int | None,
        request_id: str | None,
        error: str,
        delay: float | None,
        observed: BatchObservation | None = None,
    ) -> Attempt:
        if delay is None:
            delay = self.policy.durable_backoff(claim.attempts + 1, self.random_unit())
        now = self.clock.now()
        return Attempt(
            AttemptOutcome.RETRY,
            started,
            now,
            http_status=status,
            request_id=request_id,
            error=error,
            retry_at=now + timedelta(seconds=delay),
            observed=observed,
        )

    def _attempt(
        self, outcome: AttemptOutcome, started: datetime, exc: ApiStatusError, *, retry_in: float
    ) -> Attempt:
        now = self.clock.now()
        return Attempt(
            outcome,
            started,
            now,
            http_status=exc.status,
            request_id=exc.request_id,
            error=str(exc),
            retry_at=now + timedelta(seconds=retry_in),
        )

    def _auth_pause(self) -> float:
        return self.config.auth_pause_seconds

    def _pause_everyone(self, attempt: Attempt) -> None:
        now = self.clock.now()
        reason = (
            f"the API refused our key (HTTP {attempt.http_status}): check OPENAI_API_KEY, "
            f"OPENAI_ORG_ID and OPENAI_PROJECT_ID. {attempt.error or ''}"
        ).strip()
        self.store.pause(reason, now=now, until=now + timedelta(seconds=self._auth_pause()))
        log.error(
            "ALL SENDING PAUSED for %.0fs: %s",
            self._auth_pause(),
            reason,
            extra={"action": "paused"},
        )
