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
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
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
from orchestrator.core.observation import BatchObservation, MalformedBatch, WrongBatch, parse_batch
from orchestrator.core.retry_policy import RetryPolicy, outage_backoff
from orchestrator.db.cancels import Attempt, CancelStore, Claim
from orchestrator.db.models import Pause
from orchestrator.errors import ApiError, DatabaseUnavailable, InvalidBatchId, describe
from orchestrator.probes import Heartbeat
from orchestrator.processes.story import PeriodicSummary
from orchestrator.processes.worker_report import WorkerReport, tell

log = logging.getLogger(__name__)

PAUSE_CHECK_INTERVAL = timedelta(seconds=1)
TICK_SECONDS = 0.02
NOT_FOUND_MESSAGE = "no such batch, or not visible to this key (check the id, org and project)"


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    concurrency: int = 16
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 20.0
    idle_seconds: float = 1.0
    auth_pause_seconds: float = 300.0
    db_retry_max_seconds: float = 30.0
    summary_seconds: float = 60.0  # a one-line summary at INFO this often (0: never)


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
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.config = config
        self.policy = policy
        self.clock = clock
        self.owner = owner
        self.random_unit = random_unit
        self.report = WorkerReport()
        self.heartbeat = heartbeat or Heartbeat(clock)  # /healthz: the loop still turns
        self._pause: Pause | None = None
        self._pause_checked: datetime | None = None
        self._sending = 0  # claims handed to the pool and not yet recorded
        self.story = PeriodicSummary(
            "worker",
            config.summary_seconds,
            since=clock.now(),
            backlog=lambda now: (self.store.due_count(now), self._sending),
            line=lambda c: f"{c['settled']} settled, {c['errors']} error(s)",
        )

    # --- the loop -------------------------------------------------------------
    #
    # The loop thread owns the database: it claims, heartbeats and records.
    # Pool threads only talk HTTP and hand back an Attempt. Recording all the
    # attempts that finished since the last turn in one transaction keeps the
    # per-cancel database cost (and SQLite's single writer) out of the way.
    # Claims are leased up to twice the concurrency: the extra ones queue in the
    # pool and are heartbeated like the running ones.

    def run(self, stop: threading.Event, *, once: bool = False) -> WorkerReport:
        """Work until `stop` is set (or, with `once`, until nothing is due now)."""
        in_flight: dict[Future[Attempt], Claim] = {}
        finished: list[tuple[Claim, Attempt]] = []
        last_heartbeat = self.clock.now()
        db_failures = 0
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="cancel") as pool:
            while True:
                self.heartbeat.beat()
                finished.extend(self._collect(in_flight))
                claims: list[Claim] = []
                try:
                    now = self.clock.now()
                    self._record(finished)
                    if stop.is_set():
                        break
                    if not self._paused(now):
                        claims = self.store.claim_due(
                            self.owner,
                            now=now,
                            limit=2 * self.config.concurrency - len(in_flight),
                            lease_seconds=self.config.lease_seconds,
                        )
                    for claim in claims:
                        in_flight[pool.submit(self._send, claim)] = claim
                    if now - last_heartbeat >= timedelta(seconds=self.config.heartbeat_seconds):
                        self._heartbeat(in_flight, now)
                        last_heartbeat = now
                    self._sending = len(in_flight)
                    self.story.tell_if_due(now)
                    db_failures = 0
                except DatabaseUnavailable as exc:
                    db_failures += 1
                    self._database_down(exc, db_failures, stop)
                    if stop.is_set():
                        break
                    continue
                if once and not in_flight and not claims:
                    break
                self._wait(in_flight, stop, busy=bool(claims))
            self._shut_down(in_flight, finished)
        return self.report

    def _collect(self, in_flight: dict[Future[Attempt], Claim]) -> list[tuple[Claim, Attempt]]:
        done = [f for f in in_flight if f.done()]
        return [(in_flight.pop(f), f.result()) for f in done]

    def _record(self, finished: list[tuple[Claim, Attempt]]) -> None:
        """Record what finished; on success the list is emptied (else kept for a retry)."""
        if not finished:
            return
        try:
            states = self.store.record_attempts(self.owner, finished)
        except DatabaseUnavailable:
            raise
        except Exception:  # one answer we cannot record must not stop the others
            log.exception("recording %d answer(s) failed; recording each alone", len(finished))
            states = {c.batch_id: self._record_alone(c, a) for c, a in finished}
        for claim, attempt in finished:
            self.report.count(claim.batch_id, attempt.outcome)
            tell(self.story, claim.batch_id, attempt, states.get(claim.batch_id))
        auth = [a for _, a in finished if a.outcome is AttemptOutcome.AUTH]
        finished.clear()
        if auth:
            self._pause_everyone(auth[0])

    def _record_alone(self, claim: Claim, attempt: Attempt) -> str:
        """Record one answer; if even that fails, record only that it could not be
        recorded, with a backoff, so the cancel is not sent again in a hot loop."""
        try:
            return self.store.record_attempt(claim, self.owner, attempt)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            log.exception("could not record the answer", extra={"batch_id": claim.batch_id})
            error = f"could not record the answer ({attempt.outcome.value}): {describe(exc)}"
        fallback = self._retry(
            claim,
            attempt.started_at,
            attempt.http_status,
            attempt.request_id,
            error,
            None,
            events=(("unexpected_error", error),),
        )
        try:
            return self.store.record_attempt(claim, self.owner, fallback)
        except DatabaseUnavailable:
            raise
        except Exception:  # the lease runs out and the cancel is sent again then
            log.exception("could not record the failure either", extra={"batch_id": claim.batch_id})
            return "unrecorded"

    def _heartbeat(self, in_flight: dict[Future[Attempt], Claim], now: datetime) -> None:
        ids = [c.batch_id for c in in_flight.values()]
        self.store.heartbeat(self.owner, ids, now=now, lease_seconds=self.config.lease_seconds)

    def _database_down(self, exc: Exception, failures: int, stop: threading.Event) -> None:
        self.report.db_outages += 1
        pause = outage_backoff(failures, initial=1.0, cap=self.config.db_retry_max_seconds)
        log.warning(
            "%s; retrying in %.1fs; nothing is lost: unrecorded cancels are re-sent "
            "after their lease expires",
            exc,
            pause,
            extra={"action": "db_unavailable"},
        )
        self.heartbeat.beat(busy_for=pause)
        stop.wait(pause)

    def _wait(
        self, in_flight: dict[Future[Attempt], Claim], stop: threading.Event, *, busy: bool
    ) -> None:
        """Let the sends run for one tick (or idle when there is nothing to do).

        Up to `concurrency` claims wait queued behind the running sends, so a pool
        thread that finishes starts the next cancel at once; the loop only has to
        come round once a tick to record answers and top the queue up, which lets
        one transaction record many answers.
        """
        if in_flight:
            wait(list(in_flight), timeout=TICK_SECONDS, return_when=ALL_COMPLETED)
        elif not busy:
            self.heartbeat.beat(busy_for=self.config.idle_seconds)
            stop.wait(self.config.idle_seconds)

    def _shut_down(
        self, in_flight: dict[Future[Attempt], Claim], finished: list[tuple[Claim, Attempt]]
    ) -> None:
        """Stop: let running sends finish and be recorded; give back what never started."""
        unstarted = [claim for future, claim in in_flight.items() if future.cancel()]
        wait([f for f in in_flight if not f.cancelled()])
        finished.extend((claim, f.result()) for f, claim in in_flight.items() if not f.cancelled())
        for delay in (0.0, 0.5, 1.0, 2.0, 4.0):
            threading.Event().wait(delay)
            try:
                self._record(finished)
                self.report.released += self.store.release(
                    self.owner, [c.batch_id for c in unstarted]
                )
                return
            except DatabaseUnavailable as exc:
                log.warning("database unavailable while stopping (%s)", exc)
        log.error(
            "stopped without recording %d answer(s) and releasing %d lease(s): the cancels "
            "are re-sent when the leases expire",
            len(finished),
            len(unstarted),
        )

    def _paused(self, now: datetime) -> bool:
        """Is sending paused (401/403 anywhere)? Asked of the database once a second."""
        if self._pause_checked is None or now - self._pause_checked >= PAUSE_CHECK_INTERVAL:
            self._pause = self.store.active_pause(now)
            self._pause_checked = now
        pause = self._pause
        if pause is None or pause.until <= now:
            return False
        if self.report.paused != pause.reason:
            log.error(
                "ALL SENDING PAUSED until %s: %s",
                pause.until.isoformat(),
                pause.reason,
                extra={"action": "paused"},
            )
        self.report.paused = pause.reason
        return True

    # --- one send (in a pool thread) --------------------------------------------

    def _send(self, claim: Claim) -> Attempt:
        started = self.clock.now()
        try:
            return self._send_once(claim, started)
        except Exception as exc:  # a bug or an answer nobody foresaw: this cancel only
            log.exception("sending the cancel failed", extra={"batch_id": claim.batch_id})
            error = f"unexpected error while sending the cancel: {describe(exc)}"
            return self._retry(
                claim, started, None, None, error, None, events=(("unexpected_error", error),)
            )

    def _send_once(self, claim: Claim, started: datetime) -> Attempt:
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
            observed = parse_batch(result.data, expected_id=claim.batch_id)
        except WrongBatch as exc:  # believe neither the 200 nor the object: ask
            error = f"the cancel's answer (HTTP {result.status}) was wrong: {exc}"
            return self._after_refusal(
                claim, started, result.status, result.request_id, error, (("anomaly", error),)
            )
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
        events: tuple[tuple[str, str], ...] = (),
    ) -> Attempt:
        """The cancel was refused (or its answer was wrong): GET the batch and record
        the truth. An answer about another batch is an anomaly, never applied."""
        try:
            result = self.client.retrieve(claim.batch_id)
            observed = parse_batch(result.data, expected_id=claim.batch_id)
        except WrongBatch as exc:
            text = f"the GET after the cancel was wrong: {exc}"
            return self._retry(
                claim,
                started,
                status,
                request_id,
                f"{error}; {text}",
                None,
                events=(*events, ("anomaly", text)),
            )
        except ApiNotFoundError as exc:
            return Attempt(
                AttemptOutcome.NOT_FOUND,
                started,
                self.clock.now(),
                http_status=exc.status,
                request_id=exc.request_id,
                error=f"{exc}; {NOT_FOUND_MESSAGE}",
            )
        except ApiAuthError as exc:
            return self._attempt(AttemptOutcome.AUTH, started, exc, retry_in=self._auth_pause())
        except (ApiError, MalformedBatch) as exc:
            return self._retry(
                claim,
                started,
                status,
                request_id,
                f"{error}; then the GET failed: {exc}",
                None,
                events=events,
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
                events=events,
            )
        return Attempt(
            outcome,
            started,
            self.clock.now(),
            http_status=status,
            request_id=request_id,
            error=error,
            observed=observed,
            events=events,
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
        events: tuple[tuple[str, str], ...] = (),
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
            events=events,
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
        until = now + timedelta(seconds=self._auth_pause())
        self.store.pause(reason, now=now, until=until)
        self._pause, self._pause_checked = self.store.active_pause(now), now
        log.error(
            "ALL SENDING PAUSED for %.0fs: %s Fix it, then `orchestrator resume`.",
            self._auth_pause(),
            reason,
            extra={"action": "paused"},
        )
