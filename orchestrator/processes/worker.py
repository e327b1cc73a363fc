"""The cancel worker: lease due cancel requests, send them, record every answer.

One loop thread claims work, hands each claim to the sender (an event loop in
a thread of its own, ``concurrency`` sends at once: processes/sender.py), and
records what came back; each send is one cancel (the client retries briefly
in-process), and, if it was refused, a GET of the batch. Long waits are never
slept through: they become the request's persisted next attempt time, so a
restart or another worker honours them too.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.errors import (
    ApiAuthError,
    ApiNotFoundError,
    ApiRejectedError,
    ApiStatusError,
    RetryLater,
)
from orchestrator.clock import Clock
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome, after_rejection
from orchestrator.core.observation import BatchObservation, MalformedBatch, WrongBatch, parse_batch
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import CancelStore, Claim
from orchestrator.db.pauses import SendingPause
from orchestrator.db.server_clock import never_waiting
from orchestrator.errors import ApiError, DatabaseUnavailable, InvalidBatchId, describe
from orchestrator.probes import Heartbeat
from orchestrator.processes.config import WorkerConfig, worker_setup
from orchestrator.processes.loop import LoopProcess, Sleep, wait_on_stop
from orchestrator.processes.recent import RECENT_KEPT
from orchestrator.processes.sender import AsyncSender
from orchestrator.processes.story import PeriodicSummary
from orchestrator.processes.worker_report import WorkerReport, tell
from orchestrator.settings import Settings

__all__ = ["CancelWorker", "WorkerConfig"]

log = logging.getLogger(__name__)

PAUSE_CHECK_INTERVAL = timedelta(seconds=1)
TICK_SECONDS = 0.1  # the longest an answer waits to be recorded
NOT_FOUND_MESSAGE = "no such batch, or not visible to this key (check the id, org and project)"


class _NotSent(Exception):
    """A send that started once the worker was stopping, while the database had not
    heard this worker for a while (its leases may soon be others'), or once this process
    knew sending was paused (a 401/403): nothing left the host."""


@dataclass
class _Flight:
    """The loop's sends: running or queued (``in_flight``), answered but not yet
    recorded (``finished``, kept across a database outage), and never sent (``unsent``,
    their leases to give back)."""

    last_heartbeat: datetime
    in_flight: dict[Future[Attempt], Claim] = field(default_factory=dict)
    finished: list[tuple[Claim, Attempt]] = field(default_factory=list)
    unsent: list[Claim] = field(default_factory=list)


class CancelWorker(LoopProcess):
    name = "worker"

    def __init__(
        self,
        store: CancelStore,
        client: AsyncBatchApiClient,
        config: Settings | WorkerConfig,
        clock: Clock,
        owner: str,
        *,
        policy: RetryPolicy | None = None,
        random_unit: Callable[[], float] = random.random,
        stop: threading.Event | None = None,
        heartbeat: Heartbeat | None = None,
        sleep: Sleep = wait_on_stop,
    ) -> None:
        self.store = store
        self.client = client
        self.config, self.policy = worker_setup(config, policy)
        super().__init__(
            clock, owner, random_unit=random_unit, stop=stop, heartbeat=heartbeat, sleep=sleep
        )
        # The sends' clock: the event loop never waits on the database (every send would).
        self.send_clock = never_waiting(clock)
        self.report = WorkerReport()
        self._pause: SendingPause | None = None
        self._pause_checked: datetime | None = None
        # A 401/403 met on the sender's event loop, until ``_pause_everyone`` has written
        # it as the pause: no queued send starts meanwhile (``_may_send``).
        self._refused_until: datetime | None = None
        self._unwritten_pause: Attempt | None = None  # its 401/403, until written
        self._sending = 0  # claims handed to the pool and not yet recorded
        self.story = PeriodicSummary(
            "worker",
            self.config.summary_seconds,
            since=clock.now(),
            backlog=lambda now: (self.store.due_count(now), self._sending),
            line=lambda c: f"{c['settled']} settled, {c['errors']} error(s)",
        )

    # --- the loop -------------------------------------------------------------
    #
    # The loop thread owns the database: it claims, heartbeats and records.
    # The sender's event loop only talks HTTP and hands back an Attempt. Recording all the
    # attempts that finished since the last turn in one transaction keeps the
    # per-cancel database cost (and SQLite's single writer) out of the way.
    # Claims are leased up to twice the concurrency: the extra ones queue in the
    # sender and are heartbeated like the running ones.

    def run(self, stop: threading.Event | None = None, *, once: bool = False) -> WorkerReport:
        """Work until `stop` is set (or, with `once`, until nothing is due now)."""
        loop = self.process_loop(
            self.config,
            stop,
            outage_note="nothing is lost: unrecorded cancels are re-sent after their lease expires",
        )
        # Until stopped, the report keeps the most recent outcomes only (recent.py).
        self.report.keep = None if once else RECENT_KEPT
        with AsyncSender(self.config.concurrency, close_with=self.client.aclose) as sender:
            flight = _Flight(last_heartbeat=self.clock.now())
            try:
                loop.run(lambda: self._turn(sender, flight, once=once))
            finally:
                self.report.db_outages += loop.outages
                self._shut_down(flight)
        return self.report

    def _turn(self, sender: AsyncSender, flight: _Flight, *, once: bool) -> float | None:
        """Record what finished, heartbeat the leases held, claim what is due; then let
        the sends run for one tick (or say how long to idle when there is nothing to do)."""
        in_flight = flight.in_flight
        self._collect(flight, sender.take_finished())
        now = self.clock.now()
        self._record(flight.finished)
        self._write_pause()
        if flight.unsent and not self.stop.is_set():  # held back (unheard, paused): anew
            self.report.released += self.store.release(
                self.owner, [c.batch_id for c in flight.unsent]
            )
            flight.unsent.clear()
        # Leases held are kept before more are claimed: after turns that stalled past
        # the lease (a database outage), a claim would hand back a cancel still on the
        # wire. The heartbeat extends this owner's leases even once expired (leases.py).
        if now - flight.last_heartbeat >= timedelta(seconds=self.config.heartbeat_seconds):
            self._heartbeat(in_flight, now)
            flight.last_heartbeat = now
        claims: list[Claim] = []
        room = 2 * self.config.concurrency - len(in_flight)
        if room >= self._batch() and not self._paused(now) and self._heard(now):
            claims = self.store.claim_due(
                self.owner, now=now, limit=room, lease_seconds=self.config.lease_seconds
            )
        run = self._run()  # a send stops short if the database stops hearing us after it
        sends = sender.submit_all([functools.partial(self._send, c, run) for c in claims])
        in_flight.update(zip(sends, claims, strict=True))
        self._sending = len(in_flight)
        self.story.tell_if_due(now)
        if once and not in_flight and not claims:
            return None
        # Up to `concurrency` claims wait queued behind the running sends, so a send
        # that finishes starts the next cancel at once; the loop only has to come
        # round when half the concurrency has answered (or a tick has passed) to
        # record the answers and top the queue up: one transaction records many
        # answers, and one claims many requests.
        if in_flight:
            batch = min(len(in_flight), self._batch())
            sender.wait_finished(batch, timeout=TICK_SECONDS)
            return 0.0
        return 0.0 if claims else self.config.idle_seconds

    def _batch(self) -> int:
        """Answers to record (and requests to claim) at once: half the concurrency."""
        return max(1, self.config.concurrency // 2)

    def _collect(self, flight: _Flight, done: list[Future[Attempt]]) -> None:
        """Move the ended sends out of ``in_flight``: answered, or never sent."""
        for future in done:
            claim = flight.in_flight.pop(future)
            if isinstance(future.exception(), _NotSent):
                flight.unsent.append(claim)
            else:
                flight.finished.append((claim, future.result()))

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
            self.report.count(claim.batch_id, attempt.outcome, went_out=attempt.went_out)
        tell(self.story, finished, states)
        auth = [a for _, a in finished if a.outcome is AttemptOutcome.AUTH]
        finished.clear()
        if auth:
            self._unwritten_pause = auth[0]

    def _write_pause(self) -> None:
        """Write the pause a 401/403 asked for; one an outage kept from being written
        is written at the next turn (until then this worker alone holds back)."""
        if self._unwritten_pause is not None:
            self._pause_everyone(self._unwritten_pause)
            self._unwritten_pause = None

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
            error,
            status=attempt.http_status,
            request_id=attempt.request_id,
            events=(("unexpected_error", error),),
            went_out=attempt.went_out,  # a hold stays no attempt; it waits the backoff now
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

    def _shut_down(self, flight: _Flight) -> None:
        """Stop: let running sends finish and be recorded; give back what never started,
        or started only once the worker was stopping (``_NotSent``)."""
        in_flight, finished = flight.in_flight, flight.finished
        unstarted = [claim for future, claim in in_flight.items() if future.cancel()]
        wait([f for f in in_flight if not f.cancelled()])
        self._collect(flight, [f for f in in_flight if not f.cancelled()])
        unstarted += flight.unsent
        for delay in (0.0, 0.5, 1.0, 2.0, 4.0):
            self.sleep(threading.Event(), delay)  # self.stop is set: a fresh event waits
            try:
                self._record(finished)
                self._write_pause()  # a 401 met while stopping still pauses the others
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

    def _heard(self, now: datetime, run: datetime | None = None) -> bool:
        """Has the database heard this worker lately (``core/liveness.py``), and, given
        ``run`` (``_run`` when a claim was made), without a break since? If not, its
        leases may be others' soon, or already: it claims nothing and sends nothing it
        holds, first tries and retries alike."""
        own = self.store.db.own_heartbeats
        return own is None or own.heard_since(now, run)

    def _run(self) -> datetime | None:
        """When the present unbroken run of this worker's heartbeats began (None: no
        presence to go by)."""
        own = self.store.db.own_heartbeats
        return None if own is None else own.since

    def _paused(self, now: datetime) -> bool:
        """Is sending paused (401/403 anywhere)? Asked of the database once a second; a
        401/403 met here and not yet written as the pause counts too."""
        refused = self._refused_until
        if refused is not None and refused > now:
            return True
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

    def _may_send(self, now: datetime, run: datetime | None) -> bool:
        """May a send, or an in-process retry, start at ``now``: the database has heard
        this worker (``_heard``), and sending is not paused as far as this process knows
        (the pause it last read, or a 401/403 met here and not yet written as one).
        Asked on the sender's event loop: it reads the loop thread's values, never the
        database."""
        refused, pause = self._refused_until, self._pause
        if (refused is not None and refused > now) or (pause is not None and pause.until > now):
            return False
        return self._heard(now, run)

    # --- one send (on the sender's event loop) -----------------------------------

    async def _send(self, claim: Claim, run: datetime | None = None) -> Attempt:
        if self.stop.is_set() or self.client.aborted:  # its slot freed as the worker stops
            raise _NotSent  # (by a send the stop aborted): give it back as it was
        started = self.send_clock.now()
        if not self._may_send(started, run):  # unheard: others may take it soon, or have
            raise _NotSent  # (sent now, it could cross theirs); paused: it would be refused
        try:
            attempt = await self._send_once(claim, started, run)
        except Exception as exc:  # a bug or an answer nobody foresaw: this cancel only
            log.exception("sending the cancel failed", extra={"batch_id": claim.batch_id})
            error = f"unexpected error while sending the cancel: {describe(exc)}"
            return self._retry(claim, started, error, events=(("unexpected_error", error),))
        if attempt.outcome is AttemptOutcome.AUTH:  # before its slot starts a queued send
            self._refused_until = attempt.retry_at
        return attempt

    async def _send_once(self, claim: Claim, started: datetime, run: datetime | None) -> Attempt:
        try:
            result = await self.client.cancel(
                claim.batch_id, may_retry=lambda: self._may_send(self.send_clock.now(), run)
            )
        except RetryLater as exc:
            if exc.status == 409:  # refused after retries: ask the server what is true
                return await self._refused(claim, started, exc, run)
            return self._retry(
                claim,
                started,
                str(exc),
                status=exc.status,
                request_id=exc.request_id,
                delay=exc.delay_s,
                went_out=exc.went_out,
            )
        except ApiAuthError as exc:
            return self._attempt(AttemptOutcome.AUTH, started, exc, retry_in=self._auth_pause())
        except (ApiNotFoundError, ApiRejectedError) as exc:
            return await self._refused(claim, started, exc, run)
        except InvalidBatchId as exc:
            return Attempt(AttemptOutcome.INVALID, started, self.send_clock.now(), error=str(exc))
        except ApiError as exc:  # protocol or transport error that escaped the client
            return self._retry(claim, started, str(exc))
        try:
            observed = parse_batch(result.data, expected_id=claim.batch_id)
        except MalformedBatch as exc:  # believe neither the 200 nor the body: ask
            what = "was wrong" if isinstance(exc, WrongBatch) else "was not a Batch"
            error = f"the cancel's answer (HTTP {result.status}) {what}: {exc}"
            return await self._after_refusal(
                claim,
                started,
                error,
                run=run,
                status=result.status,
                request_id=result.request_id,
                events=(("anomaly", error),),
            )
        return Attempt(
            AttemptOutcome.ACCEPTED,
            started,
            self.send_clock.now(),
            http_status=result.status,
            request_id=result.request_id,
            observed=observed,
        )

    async def _refused(
        self,
        claim: Claim,
        started: datetime,
        exc: ApiStatusError | RetryLater,
        run: datetime | None,
    ) -> Attempt:
        return await self._after_refusal(
            claim, started, str(exc), run=run, status=exc.status, request_id=exc.request_id
        )

    async def _after_refusal(
        self,
        claim: Claim,
        started: datetime,
        error: str,
        *,
        run: datetime | None,
        status: int | None,
        request_id: str | None,
        events: tuple[tuple[str, str], ...] = (),
    ) -> Attempt:
        """The cancel was refused (or its answer was wrong): GET the batch and record
        the truth. An answer about another batch is an anomaly, never applied. The GET
        waits, as a send would, while sending is paused or the worker is unheard."""
        if not self._may_send(self.send_clock.now(), run):
            return self._retry(
                claim,
                started,
                f"{error}; the GET that follows it was held back (sending paused, or this "
                "worker unheard)",
                status=status,
                request_id=request_id,
                events=events,
            )
        try:
            result = await self.client.retrieve(claim.batch_id)
            observed = parse_batch(result.data, expected_id=claim.batch_id)
        except WrongBatch as exc:
            text = f"the GET after the cancel was wrong: {exc}"
            return self._retry(
                claim,
                started,
                f"{error}; {text}",
                status=status,
                request_id=request_id,
                events=(*events, ("anomaly", text)),
            )
        except ApiNotFoundError as exc:
            return Attempt(
                AttemptOutcome.NOT_FOUND,
                started,
                self.send_clock.now(),
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
                f"{error}; then the GET failed: {exc}",
                status=status,
                request_id=request_id,
                events=events,
            )
        outcome = after_rejection(observed.status)
        if outcome is AttemptOutcome.RETRY:
            return self._retry(
                claim,
                started,
                f"{error}; the batch is {observed.status_text}",
                status=status,
                request_id=request_id,
                observed=observed,
                events=events,
            )
        return Attempt(
            outcome,
            started,
            self.send_clock.now(),
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
        error: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        delay: float | None = None,
        went_out: bool = True,
        observed: BatchObservation | None = None,
        events: tuple[tuple[str, str], ...] = (),
    ) -> Attempt:
        """Try again later: after our backoff, or ``delay`` (the server's Retry-After)
        where that is longer (``RetryPolicy.durable_delay``)."""
        delay = self.policy.durable_delay(
            claim.attempts + 1, self.random_unit(), delay, went_out=went_out
        )
        now = self.send_clock.now()
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
            went_out=went_out,
        )

    def _attempt(
        self, outcome: AttemptOutcome, started: datetime, exc: ApiStatusError, *, retry_in: float
    ) -> Attempt:
        now = self.send_clock.now()
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
        self._refused_until = None  # written: the pause read (``resume`` lifts it) rules
        log.error(
            "ALL SENDING PAUSED for %.0fs: %s Fix it, then `orchestrator resume`.",
            self._auth_pause(),
            reason,
            extra={"action": "paused"},
        )
